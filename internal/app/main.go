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
// cancelled by SIGINT or SIGTERM (or, under go run, by the go command's
// exit: see watchGoRun) and the process's arguments and environment, and
// exits 1 with the error (prefixed with name) when run fails. -h is not a
// failure.
func Main(name string, run func(context.Context, Runtime) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, orphaned := context.WithCancelCause(ctx)
	endWatch := watchGoRun(os.Getppid(), orphaned)
	err := run(ctx, OSRuntime())
	endWatch()
	orphaned(nil)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}
