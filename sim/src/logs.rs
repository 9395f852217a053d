//! `pods/{name}/log`: serves `{state-dir}/logs/{ns}/{pod}/{container}.log`, written by the Job
//! runner, with `container`, `tailLines`, `limitBytes` and `follow`.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::ApiError;
use crate::ops::State;

/// Log request parameters.
#[derive(Debug, Clone, Default)]
pub struct LogParams {
    /// `container`.
    pub container: Option<String>,
    /// `follow`.
    pub follow: bool,
    /// `tailLines`.
    pub tail_lines: Option<usize>,
    /// `limitBytes`.
    pub limit_bytes: Option<usize>,
}

fn container_names(pod: &Value, key: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{key}"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn terminated(pod: &Value, container: &str) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return true;
    }
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .any(|k| {
            pod.pointer(&format!("/status/{k}"))
                .and_then(Value::as_array)
                .is_some_and(|a| {
                    a.iter().any(|s| {
                        s.get("name").and_then(Value::as_str) == Some(container)
                            && s.pointer("/state/terminated").is_some()
                    })
                })
        })
}

/// The log file of a container.
pub fn log_path(state: &State, ns: &str, pod: &str, container: &str) -> PathBuf {
    state
        .state_dir
        .join("logs")
        .join(ns)
        .join(pod)
        .join(format!("{container}.log"))
}

fn tail(data: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &data[data.len()..];
    }
    let mut count = 0;
    let end = if data.ends_with(b"\n") {
        data.len() - 1
    } else {
        data.len()
    };
    for i in (0..end).rev() {
        if data[i] == b'\n' {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

/// Streams a container's log.
pub async fn pod_log(
    state: Arc<State>,
    pod_rd: Arc<crate::resources::ResourceDef>,
    ns: String,
    name: String,
    p: LogParams,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, ApiError> {
    let pod = state.get(&pod_rd, &ns, &name)?;
    let main = container_names(&pod, "containers");
    let init = container_names(&pod, "initContainers");
    let container = match p.container.clone() {
        Some(c) if !c.is_empty() => {
            if !main.contains(&c) && !init.contains(&c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c
        }
        _ if main.len() == 1 => main[0].clone(),
        _ => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            return Err(ApiError::bad_request(msg));
        }
    };
    let path = log_path(&state, &ns, &name, &container);
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(_) => {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
            )));
        }
    };
    let start = match p.tail_lines {
        Some(n) => data.len() - tail(&data, n).len(),
        None => 0,
    };
    let mut first = data[start..].to_vec();
    let mut offset = data.len() as u64;
    let limit = p.limit_bytes;
    if let Some(l) = limit {
        first.truncate(l);
    }
    let mut sent = first.len();
    let s = async_stream::stream! {
        if !first.is_empty() {
            yield Ok(Bytes::from(first));
        }
        if p.follow {
            loop {
                if limit.is_some_and(|l| sent >= l) {
                    break;
                }
                // Decide on termination before reading, so bytes written before the container
                // ended are always drained.
                let done = match state.get(&pod_rd, &ns, &name) {
                    Ok(pod) => terminated(&pod, &container),
                    Err(_) => true,
                };
                let mut chunk = Vec::new();
                if let Ok(mut f) = tokio::fs::File::open(&path).await
                    && f.seek(std::io::SeekFrom::Start(offset)).await.is_ok()
                {
                    let _ = f.read_to_end(&mut chunk).await;
                }
                if !chunk.is_empty() {
                    offset += chunk.len() as u64;
                    if let Some(l) = limit {
                        chunk.truncate(l - sent);
                    }
                    sent += chunk.len();
                    yield Ok(Bytes::from(chunk));
                    continue;
                }
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_lines() {
        assert_eq!(tail(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail(b"a\nb\nc", 1), b"c");
        assert_eq!(tail(b"a\n", 5), b"a\n");
    }
}
