//! `GET /containerLogs/{ns}/{pod}/{container}`: parse the kubelet's log query into [`LogOptions`]
//! and stream the provider's bytes as the response body. Each chunk is written (and flushed) as it
//! arrives; the body, and with it the provider's stream, is dropped when the client leaves, so
//! nothing outlives the request.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use http::header;
use jiff::{SignedDuration, Timestamp};

use super::AppState;
use super::errors::ApiError;
use crate::provider::LogOptions;

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "true" | "1" | "True" | "TRUE" => Ok(true),
        "false" | "0" | "False" | "FALSE" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "invalid boolean for {name}: {value:?}"
        ))),
    }
}

fn parse_int(name: &str, value: &str, min: i64) -> Result<i64, ApiError> {
    match value.parse::<i64>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(ApiError::BadRequest(format!(
            "{name} must be an integer >= {min}, got {value:?}"
        ))),
    }
}

/// The [`LogOptions`] of a `/containerLogs` query, validated as the kubelet does.
pub fn log_options(pairs: &[(String, String)], now: Timestamp) -> Result<LogOptions, ApiError> {
    let mut opts = LogOptions::default();
    let mut since_seconds = None;
    let mut since_time = None;
    for (key, value) in pairs {
        match key.as_str() {
            "follow" => opts.follow = parse_bool(key, value)?,
            "previous" => opts.previous = parse_bool(key, value)?,
            "timestamps" => opts.timestamps = parse_bool(key, value)?,
            "sinceSeconds" => since_seconds = Some(parse_int(key, value, 1)?),
            "sinceTime" => {
                let ts = value.parse::<Timestamp>().map_err(|_| {
                    ApiError::BadRequest(format!("sinceTime must be RFC3339, got {value:?}"))
                })?;
                since_time = Some(ts);
            }
            "tailLines" => opts.tail_lines = Some(parse_int(key, value, 0)?.unsigned_abs()),
            "limitBytes" => opts.limit_bytes = Some(parse_int(key, value, 1)?.unsigned_abs()),
            "stream" if !value.is_empty() && value != "All" => {
                return Err(ApiError::BadRequest(format!(
                    "stream={value} is not supported; use All"
                )));
            }
            _ => {}
        }
    }
    opts.since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "at most one of sinceTime or sinceSeconds may be specified".into(),
            ));
        }
        (Some(secs), None) => now.checked_sub(SignedDuration::from_secs(secs)).ok(),
        (None, t) => t,
    };
    Ok(opts)
}

/// The route handler.
pub async fn container_logs(
    Extension(state): Extension<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let opts = log_options(&query, Timestamp::now())?;
    let pod_ref = state.pod(&namespace, &pod, None)?;
    let stream = state.api.provider.logs(&pod_ref, &container, &opts).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_option_parses() {
        let now: Timestamp = "2024-01-01T00:01:00Z".parse().unwrap();
        let opts = log_options(
            &q(&[
                ("follow", "true"),
                ("previous", "1"),
                ("timestamps", "true"),
                ("sinceSeconds", "60"),
                ("tailLines", "10"),
                ("limitBytes", "500"),
            ]),
            now,
        )
        .unwrap();
        assert!(opts.follow && opts.previous && opts.timestamps);
        assert_eq!(opts.since, Some("2024-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!((opts.tail_lines, opts.limit_bytes), (Some(10), Some(500)));
        let opts = log_options(
            &q(&[("sinceTime", "2023-12-31T23:00:00Z"), ("stream", "All")]),
            now,
        )
        .unwrap();
        assert_eq!(opts.since, Some("2023-12-31T23:00:00Z".parse().unwrap()));
        assert_eq!(log_options(&[], now).unwrap(), LogOptions::default());
    }

    #[test]
    fn invalid_options_are_rejected() {
        let now = Timestamp::now();
        for bad in [
            q(&[("follow", "maybe")]),
            q(&[("sinceSeconds", "0")]),
            q(&[("tailLines", "-1")]),
            q(&[("limitBytes", "0")]),
            q(&[("sinceTime", "yesterday")]),
            q(&[("sinceTime", "2023-12-31T23:00:00Z"), ("sinceSeconds", "5")]),
            q(&[("stream", "Stderr")]),
        ] {
            assert!(
                matches!(log_options(&bad, now), Err(ApiError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }
}
