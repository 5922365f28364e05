//go:build tools

// Keeps the fortio command in go.mod/go.sum so `go build` of it is reproducible.
package tools

import (
	_ "fortio.org/fortio"
)
