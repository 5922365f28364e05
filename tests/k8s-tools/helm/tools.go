//go:build tools

// Keeps the helm command in go.mod/go.sum so `go build` of it is reproducible.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
