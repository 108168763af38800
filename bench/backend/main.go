// A plain HTTP/1.1 backend for kitsd's transport benchmarks (bench/bench_transport.py,
// bench/bench_observe.py): N listeners on free loopback ports, each answering every
// request with a small JSON body naming its own address, so that a benchmark's
// wall time is the client's and not a Python server's.  Standard library only;
// built by bench/backend.py.
//
//	kitsd-bench-backend -n 3
//
// Prints one "host:port" line per listener, then serves until its stdin closes.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
)

func main() {
	n := flag.Int("n", 1, "listeners")
	flag.Parse()
	for i := 0; i < *n; i++ {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		address := listener.Addr().String()
		body := []byte(`{"instance":"` + address + `","path":"/"}`)
		length := strconv.Itoa(len(body))
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			h := w.Header()
			h["Content-Type"] = []string{"application/json"}
			h["Content-Length"] = []string{length}
			w.Write(body)
		})
		go http.Serve(listener, handler)
		fmt.Println(address)
	}
	io.Copy(io.Discard, os.Stdin) // serve until stdin closes
}
