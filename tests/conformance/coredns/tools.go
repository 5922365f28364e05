//go:build tools

// Keeps the coredns command in go.mod/go.sum so `go build` of it is reproducible.
package tools

import (
	_ "github.com/coredns/coredns"
)
