//! The Gateway API features Ferry implements, by the names of the conformance suite
//! (`sigs.k8s.io/gateway-api/pkg/features`), published on each GatewayClass of Ferry's as
//! `status.supportedFeatures`. The conformance suite reads them from there and runs exactly
//! those tests: a name belongs here only when its tests pass (conformance/reports/ holds the
//! report of the pinned release's run).

/// Sorted, as the spec asks of `status.supportedFeatures`.
pub const SUPPORTED: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "Gateway",
    "GatewayFrontendClientCertificateValidation",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructurePropagation",
    "GatewayPort8080",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
    "TLSRoute",
    "TLSRouteModeMixed",
    "TLSRouteModeTerminate",
];

/// `status.supportedFeatures` of a GatewayClass.
pub fn status_value() -> serde_json::Value {
    SUPPORTED
        .iter()
        .map(|name| serde_json::json!({ "name": name }))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_list_is_sorted_and_without_duplicates() {
        let mut sorted = super::SUPPORTED.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, super::SUPPORTED);
    }
}
