// Command kube-binaries builds kube-apiserver and etcd for the chart's API
// server tests into their cache directory (see internal/kubebin), unless
// they are there already, and prints that directory. CI runs it before the
// tests so that the long first build is not counted against go test's
// timeout.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/herald-push/herald/helm/test/internal/kubebin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	b, err := kubebin.Ensure(ctx, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-binaries:", err)
		os.Exit(1)
	}
	fmt.Println(b.Dir)
}
