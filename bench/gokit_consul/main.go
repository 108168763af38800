// A go-kit watcher for kitsd's benchmarks (bench/bench_propagation.py): go-kit's
// sd/consul Instancer feeding a go-kit sd.Endpointer, printing a timestamp each
// time the Endpointer builds an endpoint (an instance appeared) or closes one (it
// left).  Built by bench/gokit.py in a throwaway module outside the repository.
//
//	gokit-consul -addr 127.0.0.1:8500 -service web
//
// Prints "ready", then one line per change: "add|remove <instance> <unix ns>", and one
// per HTTP request its Consul client sends: "request <unix ns> ok|refused|error".
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	consulsd "github.com/go-kit/kit/sd/consul"
	"github.com/go-kit/log"
	consulapi "github.com/hashicorp/consul/api"
)

var out sync.Mutex

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

type closer struct{ instance string }

func (c closer) Close() error {
	say("remove %s %d", c.instance, time.Now().UnixNano())
	return nil
}

// counting reports every request the Consul client sends, and whether it connected.
type counting struct{ next http.RoundTripper }

func (c counting) RoundTrip(request *http.Request) (*http.Response, error) {
	response, err := c.next.RoundTrip(request)
	outcome := "ok"
	if errors.Is(err, syscall.ECONNREFUSED) {
		outcome = "refused"
	} else if err != nil {
		outcome = "error"
	}
	say("request %d %s", time.Now().UnixNano(), outcome)
	return response, err
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8500", "Consul agent host:port")
	service := flag.String("service", "web", "service to watch")
	flag.Parse()

	config := consulapi.DefaultConfig()
	config.Address = *addr
	config.HttpClient = &http.Client{Transport: counting{http.DefaultTransport}}
	api, err := consulapi.NewClient(config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	logger := log.NewLogfmtLogger(os.Stderr)
	instancer := consulsd.NewInstancer(consulsd.NewClient(api), logger, *service, nil, true)
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		say("add %s %d", instance, time.Now().UnixNano())
		return endpoint.Nop, closer{instance}, nil
	}
	endpointer := sd.NewEndpointer(instancer, factory, logger)
	say("ready")

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	endpointer.Close()
	instancer.Stop()
}
