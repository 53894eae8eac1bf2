package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Main is the whole of a Herald binary's main: it runs run with a context
// cancelled by SIGINT or SIGTERM and the process's arguments and
// environment, and exits 1 with the error (prefixed with name) when run
// fails. -h is not a failure.
func Main(name string, run func(context.Context, Runtime) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, OSRuntime())
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
