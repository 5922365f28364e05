//! GRPCRoute as the HTTPRoute it is on the wire.
//!
//! gRPC is HTTP/2 `POST /<service>/<method>`, so the Gateway API spec's GRPCRoute semantics
//! map onto HTTPRoute: a method match becomes a path match (both exact: exact path; service
//! only: path prefix `/<service>/`; regular expressions: a path regex over both parts),
//! header matches, filters (header modifiers, mirror) and backendRefs keep their shape.
//! Routes keep their own kind in reports and status.

use gateway_api::apis::experimental::httproutes::HttpRoute;
use gateway_api::apis::standard::grpcroutes::GrpcRoute;
use serde_json::{json, Value};

/// The equivalent HTTPRoute, or why there is none (`field: message`).
pub fn as_http_route(route: &GrpcRoute) -> Result<HttpRoute, String> {
    let mut value = serde_json::to_value(route).map_err(|e| e.to_string())?;
    if let Some(rules) = value
        .pointer_mut("/spec/rules")
        .and_then(Value::as_array_mut)
    {
        for (index, rule) in rules.iter_mut().enumerate() {
            convert_rule(rule, index)?;
        }
    }
    value["kind"] = "HTTPRoute".into();
    serde_json::from_value(value).map_err(|e| format!("spec: {e}"))
}

fn convert_rule(rule: &mut Value, index: usize) -> Result<(), String> {
    if let Some(matches) = rule.get_mut("matches").and_then(Value::as_array_mut) {
        for (m_index, m) in matches.iter_mut().enumerate() {
            let field = format!("spec.rules[{index}].matches[{m_index}].method");
            if let Some(method) = m.as_object_mut().and_then(|m| m.remove("method")) {
                m["path"] = path_match(&method).map_err(|e| format!("{field}: {e}"))?;
            }
        }
    }
    // GRPCRoute has no timeouts/retry/sessionPersistence that HTTPRoute would read
    // differently; anything else unknown is dropped by the typed conversion.
    Ok(())
}

fn path_match(method: &Value) -> Result<Value, String> {
    let text = |key: &str| {
        method
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (service, name) = (text("service"), text("method"));
    let regex = method.get("type").and_then(Value::as_str) == Some("RegularExpression");
    Ok(match (service, name, regex) {
        (None, None, _) => return Err("one of service or method must be set".into()),
        (Some(s), Some(m), false) => json!({"type": "Exact", "value": format!("/{s}/{m}")}),
        (Some(s), None, false) => json!({"type": "PathPrefix", "value": format!("/{s}")}),
        (None, Some(m), false) => {
            json!({"type": "RegularExpression", "value": format!("/[^/]+/{}", regex::escape(m))})
        }
        (s, m, true) => json!({
            "type": "RegularExpression",
            "value": format!("/{}/{}", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(yaml_matches: &str) -> Result<HttpRoute, String> {
        let yaml = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: cart, namespace: shop}}\n\
             spec:\n  parentRefs: [{{name: public}}]\n  rules: [{{matches: [{yaml_matches}], backendRefs: [{{name: cart, port: 50051}}]}}]\n"
        );
        let route: GrpcRoute = serde_yaml::from_str(&yaml).unwrap();
        as_http_route(&route)
    }

    fn path(route: &HttpRoute) -> (String, String) {
        let m = route.spec.rules.as_ref().unwrap()[0]
            .matches
            .as_ref()
            .unwrap()[0]
            .clone();
        let path = m.path.unwrap();
        (format!("{:?}", path.r#type.unwrap()), path.value.unwrap())
    }

    #[test]
    fn methods_become_paths() {
        let exact = grpc("{method: {service: shop.Cart, method: Add}}").unwrap();
        assert_eq!(path(&exact), ("Exact".into(), "/shop.Cart/Add".into()));
        let service = grpc("{method: {service: shop.Cart}}").unwrap();
        assert_eq!(path(&service), ("PathPrefix".into(), "/shop.Cart".into()));
        let regex = grpc("{method: {type: RegularExpression, service: 'shop\\..*'}}").unwrap();
        assert_eq!(
            path(&regex),
            ("RegularExpression".into(), "/shop\\..*/[^/]+".into())
        );
        let any_service = grpc("{method: {method: Get.All}}").unwrap();
        assert_eq!(
            path(&any_service),
            ("RegularExpression".into(), "/[^/]+/Get\\.All".into())
        );
    }

    #[test]
    fn an_empty_method_match_is_an_error_naming_the_field() {
        let error = grpc("{method: {}}").unwrap_err();
        assert!(
            error.starts_with("spec.rules[0].matches[0].method"),
            "{error}"
        );
    }
}
