// An OAuth2 token endpoint for kitsd.auth's tests, on go-oauth2/oauth2 (a
// well-kept Go OAuth2 server library): the client credentials grant, access
// tokens that are HS256 JWTs signed by golang-jwt, a short lifetime.
//
//	token-server -listen 127.0.0.1:0 -client-id ID -client-secret S -key K -expiry 2s
//
// POST /token is the token endpoint (client authentication by HTTP Basic or
// form fields); GET /requests answers how many token requests it has had.  It
// prints "listening HOST:PORT" once it accepts connections.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-oauth2/oauth2/v4/generates"
	"github.com/go-oauth2/oauth2/v4/manage"
	"github.com/go-oauth2/oauth2/v4/models"
	"github.com/go-oauth2/oauth2/v4/server"
	"github.com/go-oauth2/oauth2/v4/store"
	"github.com/golang-jwt/jwt/v5"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	clientID := flag.String("client-id", "kitsd", "the one client's id")
	clientSecret := flag.String("client-secret", "", "the one client's secret")
	key := flag.String("key", "", "HS256 key the access tokens are signed with")
	expiry := flag.Duration("expiry", 2*time.Second, "access token lifetime")
	delay := flag.Duration("delay", 0, "how long each token request takes")
	flag.Parse()

	manager := manage.NewDefaultManager()
	manager.SetClientTokenCfg(&manage.Config{AccessTokenExp: *expiry})
	manager.MustTokenStorage(store.NewMemoryTokenStore())
	manager.MapAccessGenerate(generates.NewJWTAccessGenerate("", []byte(*key), jwt.SigningMethodHS256))
	clients := store.NewClientStore()
	if err := clients.Set(*clientID, &models.Client{ID: *clientID, Secret: *clientSecret}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	manager.MapClientStorage(clients)

	srv := server.NewDefaultServer(manager)
	srv.SetClientInfoHandler(func(r *http.Request) (string, string, error) {
		if id, secret, ok := r.BasicAuth(); ok {
			return id, secret, nil
		}
		return server.ClientFormHandler(r)
	})

	var requests int64
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		atomic.AddInt64(&requests, 1)
		time.Sleep(*delay)
		if err := srv.HandleTokenRequest(w, r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/requests", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, atomic.LoadInt64(&requests))
	})

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", listener.Addr())
	if err := http.Serve(listener, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
