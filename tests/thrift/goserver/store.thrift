// The test service of sd.thrift's integration tests, served by the Apache Thrift
// Go library (main.go) and called by kitsd through thriftpy2, which loads this
// same file at run time.

namespace go store
namespace py store

exception NotFound {
  1: string key,
}

struct Item {
  1: string key,
  2: binary value,
  3: i64 version,
}

service Store {
  // The instance's own address, so a test sees which instance answered.
  string whoami(),
  string echo(1: string text),
  i32 add(1: i32 a, 2: i32 b),
  // A declared exception: NotFound when the key was never put.
  Item get(1: string key) throws (1: NotFound notFound),
  void put(1: Item item),
  // The handler returns a plain Go error: the library answers with a
  // TApplicationException (INTERNAL_ERROR) carrying the message.
  string fail(1: string message),
  void sleep(1: i32 millis),
  oneway void note(1: string text),
  i64 notes(),
  // size bytes, for the frame-size limit and the benchmark.
  binary blob(1: i32 size),
}
