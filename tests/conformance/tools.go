//go:build tools

// Keeps the echo server's package in this module's graph, so `go build` of it uses the same
// pinned versions as the suite.
package conformance

import _ "sigs.k8s.io/gateway-api/conformance/echo-basic"
