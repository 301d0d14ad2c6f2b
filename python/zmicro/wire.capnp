# zmicro wire header, protocol version 2.
#
# Every zmicro message is a list of ZeroMQ frames; the first frame after the
# routing id is one Cap'n Proto message whose root is `Header`. docs/protocol.md
# describes the frames around it. Rules for writers in any language:
#
# - one segment only (segment table of 8 bytes: count-1 = 0, then the size);
# - at most 8192 bytes for the whole frame, segment table included;
# - identifier texts (contentType, service, endpoint, principal, metadata keys)
#   at most 255 bytes, detail / metadata values / nonce at most 4096 bytes;
# - at most 64 metadata entries, keys non-empty and unique;
# - no far pointers, no capabilities; texts NUL-terminated UTF-8 with no
#   other NUL byte.
#
# New fields are only ever appended (next free ordinal), so an older reader
# ignores them and a newer reader sees their defaults in an older sender's
# message: adding a field never bumps `version`.

@0xbe981f6f7bfe0fc1;

# C++ code goes to namespace zmicro::wire (at the top level, Kind would clash
# with capnp::Kind). `capnp compile` finds /capnp/c++.capnp by itself;
# pycapnp's capnp.load needs imports= (docs/protocol.md section 3.8).
using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("zmicro::wire");

enum Kind {
  request @0;
  reply @1;
  error @2;
  streamData @3;
  streamEnd @4;
  cancel @5;
  ping @6;
  pong @7;
  event @8;        # a published event (docs/protocol.md §4.6)
}

struct Entry {
  key @0 :Text;
  value @1 :Data;
}

struct Header {
  version @0 :UInt16;        # protocol version; this schema is 2
  kind @1 :Kind;
  flags @2 :UInt32;          # flag* bits below; readers ignore unknown bits
  requestId @3 :UInt64;      # chosen by the caller, echoed in every answer
  deadline @4 :UInt64;       # remaining budget in microseconds; 0 = none
  status @5 :UInt16;         # gRPC canonical status code (error kind)
  keyId @6 :UInt32;          # MAC key id (signed messages)
  timestamp @7 :UInt64;      # sender's clock, microseconds since the Unix epoch
  traceIdHigh @8 :UInt64;    # W3C trace id, high 64 bits
  traceIdLow @9 :UInt64;     # W3C trace id, low 64 bits
  spanId @10 :UInt64;        # W3C parent span id

  contentType @11 :Text;     # codec of the body frames, e.g. application/msgpack
  service @12 :Text;
  endpoint @13 :Text;
  metadata @14 :List(Entry);
  nonce @15 :Data;           # random, per message (signed messages)
  principal @16 :Text;       # caller identity asserted by a trusted hop
  detail @17 :Text;          # error detail (error kind)

  # Appended after version 2 shipped (an older peer ignores it):
  maxReplySize @18 :UInt32;  # requests: largest reply frame, in bytes, the caller
                             # accepts; 0 = not stated (4 MiB, the default)
}

# Header.flags bits. A new flag must be safe to ignore: readers ignore bits
# they do not know.
const flagSigned :UInt32 = 0x1;        # the last frame is a 32-byte MAC
const flagBodyInline :UInt32 = 0x2;    # the body follows the header message in its frame
const flagMacTrailer :UInt32 = 0x4;    # with flagSigned: the MAC is the header frame's
                                       # last 32 bytes, and there is no MAC frame
const flagNotProcessed :UInt32 = 0x8;  # on an error: no handler ran for the request,
                                       # so any node may be retried
