// A Thrift server of the Store service (store.thrift) on the Apache Thrift Go
// library, for sd.thrift's integration tests: kitsd did not write the server side
// of the protocol it is tested against.
//
//	store-server -listen 127.0.0.1:0 -transport framed|buffered -protocol binary|compact
//
// It prints "listening HOST:PORT" once it accepts connections, then serves until
// killed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"kitsd.invalid/thriftserver/gen-go/store"
)

type handler struct {
	addr  string
	notes int64
	mu    sync.Mutex
	items map[string]*store.Item
}

func (h *handler) Whoami(ctx context.Context) (string, error) { return h.addr, nil }

func (h *handler) Echo(ctx context.Context, text string) (string, error) { return text, nil }

func (h *handler) Add(ctx context.Context, a, b int32) (int32, error) { return a + b, nil }

func (h *handler) Get(ctx context.Context, key string) (*store.Item, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	item, ok := h.items[key]
	if !ok {
		return nil, &store.NotFound{Key: key}
	}
	return item, nil
}

func (h *handler) Put(ctx context.Context, item *store.Item) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.items[item.Key] = item
	return nil
}

func (h *handler) Fail(ctx context.Context, message string) (string, error) {
	return "", errors.New(message)
}

func (h *handler) Sleep(ctx context.Context, millis int32) error {
	time.Sleep(time.Duration(millis) * time.Millisecond)
	return nil
}

func (h *handler) Note(ctx context.Context, text string) error {
	atomic.AddInt64(&h.notes, 1)
	return nil
}

func (h *handler) Notes(ctx context.Context) (int64, error) { return atomic.LoadInt64(&h.notes), nil }

func (h *handler) Blob(ctx context.Context, size int32) ([]byte, error) {
	return make([]byte, size), nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	transport := flag.String("transport", "buffered", "framed or buffered")
	protocol := flag.String("protocol", "binary", "binary or compact")
	flag.Parse()

	conf := &thrift.TConfiguration{}
	var transportFactory thrift.TTransportFactory
	switch *transport {
	case "buffered":
		transportFactory = thrift.NewTBufferedTransportFactory(8192)
	case "framed":
		transportFactory = thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), conf)
	default:
		fmt.Fprintf(os.Stderr, "unknown transport %q\n", *transport)
		os.Exit(2)
	}
	var protocolFactory thrift.TProtocolFactory
	switch *protocol {
	case "binary":
		protocolFactory = thrift.NewTBinaryProtocolFactoryConf(conf)
	case "compact":
		protocolFactory = thrift.NewTCompactProtocolFactoryConf(conf)
	default:
		fmt.Fprintf(os.Stderr, "unknown protocol %q\n", *protocol)
		os.Exit(2)
	}

	socket, err := thrift.NewTServerSocket(*listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	h := &handler{items: map[string]*store.Item{}}
	server := thrift.NewTSimpleServer4(store.NewStoreProcessor(h), socket, transportFactory,
		protocolFactory)
	server.SetLogger(func(string) {}) // peers that hang up mid-call are what the tests do
	if err := server.Listen(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	h.addr = socket.Addr().String()
	fmt.Printf("listening %s\n", h.addr)
	if err := server.AcceptLoop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
