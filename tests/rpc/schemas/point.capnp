@0xc4e9a3b2d1f08e71;

struct Point {
  x @0 :Int32;
  y @1 :Int32;
  label @2 :Text;
}
