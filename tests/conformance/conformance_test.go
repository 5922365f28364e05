// The upstream Gateway API conformance suite, unchanged: RunConformance reads its options
// (-gateway-class, -conformance-profiles, -supported-features, -report-output, ...) from the
// command line. tests/conformance/run.sh passes Ferry's.
package conformance

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestConformance(t *testing.T) {
	conformance.RunConformance(t)
}
