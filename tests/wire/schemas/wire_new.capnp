# A newer sender's Header: wire.capnp plus fields appended after it, in both
# sections, including a bigger Entry. An old reader must ignore them.
@0xe7a5c3b1f9d8e6c1;

enum Kind {
  request @0;
  reply @1;
  error @2;
  streamData @3;
  streamEnd @4;
  cancel @5;
  ping @6;
  pong @7;
}

struct Entry {
  key @0 :Text;
  value @1 :Data;
  sensitive @2 :Bool;
  note @3 :Text;
}

struct Header {
  version @0 :UInt16;
  kind @1 :Kind;
  flags @2 :UInt32;
  requestId @3 :UInt64;
  deadline @4 :UInt64;
  status @5 :UInt16;
  keyId @6 :UInt32;
  timestamp @7 :UInt64;
  traceIdHigh @8 :UInt64;
  traceIdLow @9 :UInt64;
  spanId @10 :UInt64;
  contentType @11 :Text;
  service @12 :Text;
  endpoint @13 :Text;
  metadata @14 :List(Entry);
  nonce @15 :Data;
  principal @16 :Text;
  detail @17 :Text;
  maxReplySize @18 :UInt32;
  priority @19 :UInt8;
  tenant @20 :Text;
  budget @21 :Float64;
  tags @22 :List(Text);
}
