# An older sender's Header: fewer data and pointer fields than wire.capnp
# (the first ordinals only), as a client written before later fields existed.
@0xd1d0b8c6a4e2f301;

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

struct Header {
  version @0 :UInt16;
  kind @1 :Kind;
  flags @2 :UInt32;
  requestId @3 :UInt64;
  deadline @4 :UInt64;
  status @5 :UInt16;
  contentType @6 :Text;
  service @7 :Text;
  endpoint @8 :Text;
}
