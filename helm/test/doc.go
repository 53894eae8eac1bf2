// Package charttest tests the Herald Helm chart (helm/herald) in three
// tiers:
//
//  1. Render (every go test): the chart rendered with the Helm library for
//     the default and a full-featured values file, linted strictly, every
//     document decoded strictly into its k8s.io/api type, the essentials
//     asserted, the schema's refusals checked, the bundled NATS
//     configuration parsed by nats-server's own parser, and the edge's
//     config file and environment loaded by Herald's own option loader.
//  2. API server: kube-apiserver and etcd (built from the Go module proxy,
//     see helm/kube) on loopback; helm install, upgrade, rollback and
//     uninstall through the Helm SDK in a namespace that enforces the
//     restricted Pod Security Standard.
//  3. Kubelet: the rendered StatefulSet and Deployment run as local
//     processes in their own network and mount namespaces, with exactly the
//     rendered command, arguments, environment, files and security
//     settings; clients connect through the rendered Service ports, and
//     the edges drain on SIGTERM within the rendered grace period.
//
// It is a separate module so that the main module does not depend on Helm
// or Kubernetes.
package charttest
