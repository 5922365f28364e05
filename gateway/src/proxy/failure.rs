//! What a failed try answers, the same on both request loops: the status and the cause
//! header naming the cluster and endpoint.

use pingora_core::{Error, ErrorType};

use super::RequestCtx;

/// The status for a proxying error, as Envoy answers: 503 when the upstream could not be
/// reached or dropped the request (connect failure, reset), 502 when it answered with
/// something that is not valid HTTP, 504 on timeouts, 400 for bad downstream requests, 0
/// when the client is gone.
pub(super) fn failure_status(error: &Error) -> u16 {
    use pingora_core::ErrorSource;
    match (error.etype(), error.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::ReadTimedout | ErrorType::WriteTimedout, _) => 504,
        (
            ErrorType::InvalidHTTPHeader
            | ErrorType::H1Error
            | ErrorType::InvalidH2
            | ErrorType::H2Downgrade,
            ErrorSource::Upstream,
        ) => 502,
        (_, ErrorSource::Upstream) => 503,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}

/// Envoy-style flag (UF connect failure, UT timeout, UC upstream connection error; URX when
/// retries were spent) and what failed.
pub(super) fn failure_cause(error: &Error, ctx: &RequestCtx) -> String {
    let timeout = matches!(
        error.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    let connect = matches!(
        error.etype(),
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
            | ErrorType::BindError
    );
    let flag = match (ctx.tries.retries > 0, timeout, connect) {
        (true, _, _) => "URX",
        (_, true, _) => "UT",
        (_, _, true) => "UF",
        _ => "UC",
    };
    let cluster = ctx
        .cluster
        .as_ref()
        .map_or_else(|| "-".to_string(), |c| c.cluster.meta.to_string());
    let endpoint = ctx
        .tries
        .last_address
        .map_or_else(|| "-".to_string(), |e| e.to_string());
    format!(
        "{flag} {cluster} endpoint {endpoint}: {}",
        error.etype().as_str()
    )
}
