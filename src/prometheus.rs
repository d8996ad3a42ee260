//! Prometheus's query API (`/api/v1/query`, `/api/v1/query_range`), as
//! Thanos and Mimir speak it too: where SLO status comes from. Queries are
//! built by runbookd from SLO files, never from alert data. A run reaches
//! it as [`crate::integrations::Metrics`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// A Prometheus to query (`prometheus:` in the config).
#[derive(Clone)]
pub struct Prometheus {
    pub url: reqwest::Url,
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    pub timeout: Duration,
}

impl std::fmt::Debug for Prometheus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prometheus")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One series of an instant answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One series of a range answer: `(unix seconds, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<RawSample>),
    Matrix(Vec<RawSeries>),
    Scalar((f64, String)),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct RawSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

#[derive(Deserialize)]
struct RawSeries {
    metric: BTreeMap<String, String>,
    values: Vec<(f64, String)>,
}

fn number(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

impl Prometheus {
    /// # Errors
    /// A header that is not one, or no TLS backend.
    pub fn new(
        url: reqwest::Url,
        headers: &BTreeMap<String, String>,
        bearer: Option<&str>,
        timeout: Duration,
    ) -> Result<Prometheus, String> {
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("header `{k}`: {e}"))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|e| format!("header `{k}`: {e}"))?;
            map.insert(name, value);
        }
        if let Some(token) = bearer {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| format!("bearer token: {e}"))?;
            value.set_sensitive(true);
            map.insert(reqwest::header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Prometheus {
            url,
            client,
            headers: map,
            timeout,
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.as_str().trim_end_matches('/'))
    }

    async fn ask(&self, path: &str, params: &[(&str, String)]) -> Result<Data, String> {
        let resp = self
            .client
            .post(self.endpoint(path))
            .headers(self.headers.clone())
            .form(params)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!(
                        "Prometheus at {} did not answer within {:?}",
                        self.url, self.timeout
                    )
                } else {
                    format!("cannot reach Prometheus at {}: {e}", self.url)
                }
            })?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("Prometheus at {}: {e}", self.url))?;
        let answer: Answer = serde_json::from_slice(&body).map_err(|_| {
            format!(
                "Prometheus at {} answered HTTP {}: {}",
                self.url,
                status.as_u16(),
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )
        })?;
        if answer.status != "success" {
            return Err(format!(
                "Prometheus at {} refused the query ({}): {}",
                self.url,
                answer.error_type.unwrap_or_default(),
                answer.error.unwrap_or_default()
            ));
        }
        answer
            .data
            .ok_or_else(|| format!("Prometheus at {} answered without data", self.url))
    }

    /// `query` at `time` (unix seconds; now without).
    ///
    /// # Errors
    /// What Prometheus answered, or why it could not be asked.
    pub async fn query(&self, query: &str, time: Option<f64>) -> Result<Vec<Sample>, String> {
        let mut params = vec![("query", query.to_owned())];
        if let Some(t) = time {
            params.push(("time", format!("{t:.3}")));
        }
        match self.ask("/api/v1/query", &params).await? {
            Data::Vector(v) => Ok(v
                .into_iter()
                .map(|s| Sample {
                    labels: s.metric,
                    value: number(&s.value.1),
                })
                .collect()),
            Data::Scalar((_, v)) => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: number(&v),
            }]),
            Data::Matrix(_) | Data::String(_) => {
                Err(format!("`{query}` is not an instant vector or scalar"))
            }
        }
    }

    /// The single value of `query` (`None`: no series, or NaN).
    ///
    /// # Errors
    /// As [`Prometheus::query`].
    pub async fn value(&self, query: &str, time: Option<f64>) -> Result<Option<f64>, String> {
        Ok(self
            .query(query, time)
            .await?
            .first()
            .map(|s| s.value)
            .filter(|v| !v.is_nan()))
    }

    /// `query` from `start` to `end` every `step` seconds.
    ///
    /// # Errors
    /// As [`Prometheus::query`].
    pub async fn range(
        &self,
        query: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, String> {
        let params = [
            ("query", query.to_owned()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", format!("{step}")),
        ];
        match self.ask("/api/v1/query_range", &params).await? {
            Data::Matrix(m) => Ok(m
                .into_iter()
                .map(|s| Series {
                    labels: s.metric,
                    points: s.values.into_iter().map(|(t, v)| (t, number(&v))).collect(),
                })
                .collect()),
            _ => Err(format!("`{query}` is not a range")),
        }
    }
}

impl crate::integrations::Metrics for Prometheus {
    fn values<'a>(&'a self, query: &'a str) -> crate::integrations::Answer<'a, Vec<f64>> {
        Box::pin(async move {
            Ok(self
                .query(query, None)
                .await?
                .into_iter()
                .map(|s| s.value)
                .collect())
        })
    }
}
