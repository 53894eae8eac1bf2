// Command etcd is etcd's own server main, built from the module that
// kube-apiserver's tests pin, so the chart tests run the pair together.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
