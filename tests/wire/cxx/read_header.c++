// read_header: reads zmicro header frames with the official Cap'n Proto C++
// library, the way docs/protocol.md section 3.8 tells other implementations
// to, for tests/wire/test_cxx.py.
//
// Built with the code `capnp compile -oc++` generates from wire.capnp; that
// code is #included below so that the test compiles one translation unit.
//
// stdin: records of [u32le frame size][i32le limit adjustment][frame]. Each
// frame is first placed at an address that is NOT 8-byte aligned, as libzmq
// may hand it over. The adjustment is added to the traversal limit the doc
// gives, so that the test can show that limit to be the smallest that works.
// stdout: one line per record, flushed:
//   ok VERSION KIND FLAGS REQUEST_ID DEADLINE STATUS KEY_ID TIMESTAMP
//      TRACE_HIGH TRACE_LOW SPAN_ID CONTENT_TYPE SERVICE ENDPOINT NONCE
//      PRINCIPAL DETAIL BODY N_METADATA (KEY VALUE)*
//   (numbers in decimal, bytes as x followed by their hex), or
//   error MESSAGE
// With --constants it prints the generated flag constants instead.
//
// docs/protocol.md section 3.8 quotes the code between doc-begin and doc-end
// (tests/cli/test_protocol_doc.py checks that it does, word for word).

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/exception.h>

#include "wire.capnp.h"
#include "wire.capnp.c++"

namespace {

// doc-begin: cxx-reader
uint32_t le32(const kj::byte* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// The header message at the start of a header frame, copied into words:
// libzmq does not align frames, FlatArrayMessageReader needs 8-byte aligned
// words. Empty if the segment table breaks section 3.3.
kj::Array<capnp::word> copyHeader(kj::ArrayPtr<const kj::byte> frame) {
  if (frame.size() < 16) return nullptr;
  uint32_t segmentsMinusOne = le32(frame.begin());
  size_t bytes = 8 + 8 * size_t(le32(frame.begin() + 4));  // n
  if (segmentsMinusOne != 0 || bytes > 8192 || bytes > frame.size()) return nullptr;
  auto words = kj::heapArray<capnp::word>(bytes / 8);
  memcpy(words.begin(), frame.begin(), bytes);
  return words;
}

// The traversal limit of section 3.5 for a header copied by copyHeader:
// enough for any valid header if getRoot and each Text, Data and List getter
// are called once.
capnp::ReaderOptions headerOptions(const kj::Array<capnp::word>& words) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = words.size();  // n / 8
  return options;
}
// doc-end: cxx-reader

std::string hex(const kj::byte* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string out = "x";
  for (size_t i = 0; i < n; i++) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

std::string hex(capnp::Text::Reader t) {
  return hex(reinterpret_cast<const kj::byte*>(t.begin()), t.size());
}

std::string hex(capnp::Data::Reader d) { return hex(d.begin(), d.size()); }

// Reads one frame as section 3.8 says: getRoot and each Text, Data and List
// getter called once (the library charges every call; data fields are free).
std::string readFrame(kj::ArrayPtr<const kj::byte> frame, int64_t limitAdjustment) {
  auto words = copyHeader(frame);
  if (words.size() == 0) return "error segment table";
  auto options = headerOptions(words);
  options.traversalLimitInWords += uint64_t(limitAdjustment);  // the test's probe, or 0
  capnp::FlatArrayMessageReader message(words, options);
  auto h = message.getRoot<zmicro::wire::Header>();

  char numbers[512];
  snprintf(numbers, sizeof numbers,
           "ok %u %u %" PRIu32 " %" PRIu64 " %" PRIu64 " %u %" PRIu32 " %" PRIu64
           " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu32,
           unsigned(h.getVersion()), unsigned(h.getKind()), h.getFlags(), h.getRequestId(),
           h.getDeadline(), unsigned(h.getStatus()), h.getKeyId(), h.getTimestamp(),
           h.getTraceIdHigh(), h.getTraceIdLow(), h.getSpanId(), h.getMaxReplySize());
  std::string line = numbers;
  for (auto text : {h.getContentType(), h.getService(), h.getEndpoint()}) line += " " + hex(text);
  line += " " + hex(h.getNonce());
  line += " " + hex(h.getPrincipal());
  line += " " + hex(h.getDetail());

  auto body = frame.slice(words.size() * 8, frame.size());  // the inline body, if any
  if (!(h.getFlags() & zmicro::wire::FLAG_BODY_INLINE) && body.size() != 0) {
    return "error bytes after the header message";
  }
  line += " " + hex(body.begin(), body.size());

  auto metadata = h.getMetadata();
  line += " " + std::to_string(metadata.size());
  for (auto entry : metadata) line += " " + hex(entry.getKey()) + " " + hex(entry.getValue());
  return line;
}

bool readExactly(void* out, size_t n) { return fread(out, 1, n, stdin) == n; }

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "--constants") == 0) {
    printf("FLAG_SIGNED %" PRIu32 "\n", zmicro::wire::FLAG_SIGNED);
    printf("FLAG_BODY_INLINE %" PRIu32 "\n", zmicro::wire::FLAG_BODY_INLINE);
    printf("FLAG_MAC_TRAILER %" PRIu32 "\n", zmicro::wire::FLAG_MAC_TRAILER);
    printf("FLAG_NOT_PROCESSED %" PRIu32 "\n", zmicro::wire::FLAG_NOT_PROCESSED);
    return 0;
  }
  for (unsigned n = 0;; n++) {
    kj::byte prefix[8];
    if (!readExactly(prefix, sizeof prefix)) return 0;
    size_t size = le32(prefix);
    int64_t adjustment = int32_t(le32(prefix + 4));
    // Misplace the frame by 1 to 7 bytes from an aligned allocation.
    std::vector<capnp::word> storage(size / 8 + 2);
    kj::byte* frame = reinterpret_cast<kj::byte*>(storage.data()) + 1 + n % 7;
    if (size != 0 && !readExactly(frame, size)) return 1;
    std::string line;
    try {
      line = readFrame(kj::arrayPtr(frame, size), adjustment);
    } catch (const kj::Exception& e) {
      line = "error " + std::string(e.getDescription().cStr());
      for (auto& c : line) {
        if (c == '\n') c = ' ';
      }
    }
    printf("%s\n", line.c_str());
    fflush(stdout);
  }
}
