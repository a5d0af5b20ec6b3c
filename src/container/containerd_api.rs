//! A minimal client for containerd's gRPC API: the two unary calls the daemon needs to name a
//! plain `ctr`/nerdctl container's image (`Containers/Get`, `Images/Get`).
//!
//! Written by hand over the `h2` crate rather than with tonic: two calls with a handful of
//! protobuf fields do not justify protoc code generation in the build. Every call has a
//! deadline, and runs on the metadata thread, so a containerd that is down or hung never
//! stalls discovery or the hot path.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiContainer {
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

/// One unary call: `service_method` like `/containerd.services.containers.v1.Containers/Get`.
pub fn unary(
    rt: &tokio::runtime::Runtime,
    address: &Path,
    namespace: &str,
    service_method: &str,
    request: Vec<u8>,
    deadline: Duration,
) -> Result<Vec<u8>, String> {
    rt.block_on(async {
        tokio::time::timeout(deadline, call(address, namespace, service_method, request))
            .await
            .map_err(|_| format!("containerd {service_method}: no answer within {deadline:?}"))?
    })
}

async fn call(address: &Path, namespace: &str, method: &str, request: Vec<u8>) -> Result<Vec<u8>, String> {
    let e =
        |what: &'static str| move |err: &dyn std::fmt::Display| format!("containerd {method}: {what}: {err}");
    let stream = tokio::net::UnixStream::connect(address).await.map_err(|x| e("connect")(&x))?;
    let (client, conn) = h2::client::handshake(stream).await.map_err(|x| e("handshake")(&x))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.map_err(|x| e("ready")(&x))?;
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://containerd{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("containerd-namespace", namespace)
        .body(())
        .map_err(|x| e("request")(&x))?;
    let (resp, mut send) = client.send_request(req, false).map_err(|x| e("send")(&x))?;
    let mut framed = Vec::with_capacity(request.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(request.len() as u32).to_be_bytes());
    framed.extend_from_slice(&request);
    send.send_data(Bytes::from(framed), true).map_err(|x| e("send body")(&x))?;
    let resp = resp.await.map_err(|x| e("response")(&x))?;
    let (parts, mut body) = resp.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|x| e("body")(&x))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.map_err(|x| e("trailers")(&x))?;
    driver.abort();
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0");
    if status != "0" {
        let msg = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-message"))
            .or_else(|| parts.headers.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(format!("containerd {method}: grpc-status {status}: {msg}"));
    }
    if data.len() < 5 || data[0] != 0 {
        return Err(format!("containerd {method}: malformed response frame"));
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.get(5..5 + len).map(<[u8]>::to_vec).ok_or_else(|| format!("containerd {method}: short response"))
}

/// `Containers/Get` for `id` in `namespace`.
pub fn get_container(
    rt: &tokio::runtime::Runtime,
    address: &Path,
    namespace: &str,
    id: &str,
    deadline: Duration,
) -> Result<ApiContainer, String> {
    let resp = unary(
        rt,
        address,
        namespace,
        "/containerd.services.containers.v1.Containers/Get",
        pb::string_field(1, id),
        deadline,
    )?;
    let container = pb::first_bytes(&resp, 1).ok_or("containerd Containers/Get: no container")?;
    Ok(pb::decode_container(container))
}

/// `Images/Get` for `name`: its target (manifest or index) digest.
pub fn get_image_digest(
    rt: &tokio::runtime::Runtime,
    address: &Path,
    namespace: &str,
    name: &str,
    deadline: Duration,
) -> Result<Option<String>, String> {
    let resp = unary(
        rt,
        address,
        namespace,
        "/containerd.services.images.v1.Images/Get",
        pb::string_field(1, name),
        deadline,
    )?;
    Ok(pb::first_bytes(&resp, 1)
        .and_then(|image| pb::first_bytes(image, 3))
        .and_then(|desc| pb::first_bytes(desc, 2))
        .map(|d| String::from_utf8_lossy(d).into_owned()))
}

/// Just enough protobuf: length-delimited fields and skipping the rest.
pub mod pb {
    use super::ApiContainer;

    fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// Iterates `(field number, bytes)` of length-delimited fields; other wire types are
    /// skipped. Stops at the first malformed byte.
    pub fn bytes_fields(buf: &[u8]) -> Vec<(u64, &[u8])> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let Some(key) = varint(buf, &mut pos) else { break };
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    if varint(buf, &mut pos).is_none() {
                        break;
                    }
                }
                1 => pos += 8,
                5 => pos += 4,
                2 => {
                    let Some(len) = varint(buf, &mut pos) else { break };
                    let end = pos.saturating_add(len as usize);
                    let Some(v) = buf.get(pos..end) else { break };
                    out.push((field, v));
                    pos = end;
                }
                _ => break,
            }
        }
        out
    }

    pub fn first_bytes(buf: &[u8], field: u64) -> Option<&[u8]> {
        bytes_fields(buf).into_iter().find(|(f, _)| *f == field).map(|(_, v)| v)
    }

    pub fn string_field(field: u64, s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |mut v: u64| loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        };
        put((field << 3) | 2);
        put(s.len() as u64);
        out.extend_from_slice(s.as_bytes());
        out
    }

    /// containerd.services.containers.v1.Container: labels = 2 (map), image = 3.
    pub fn decode_container(buf: &[u8]) -> ApiContainer {
        let mut c = ApiContainer::default();
        for (field, v) in bytes_fields(buf) {
            match field {
                2 => {
                    let k = first_bytes(v, 1).map(|b| String::from_utf8_lossy(b).into_owned());
                    let val = first_bytes(v, 2).map(|b| String::from_utf8_lossy(b).into_owned());
                    if let Some(k) = k {
                        c.labels.insert(k, val.unwrap_or_default());
                    }
                }
                3 => c.image = String::from_utf8_lossy(v).into_owned(),
                _ => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::pb::*;

    #[test]
    fn protobuf_round_trip_of_the_fields_used() {
        assert_eq!(string_field(1, "abc"), vec![0x0a, 3, b'a', b'b', b'c']);
        // Container { id: "c1", labels: {"nerdctl/name": "web"}, image: "docker.io/library/x:1",
        //             runtime: {name: "io.containerd.runc.v2"}, created_at: (varint junk) }
        let mut label = string_field(1, "nerdctl/name");
        label.extend(string_field(2, "web"));
        let mut c = string_field(1, "c1");
        c.push((2 << 3) | 2);
        c.push(label.len() as u8);
        c.extend(label);
        c.extend(string_field(3, "docker.io/library/x:1"));
        c.extend(string_field(4, "\n\x14io.containerd.runc.v2"));
        c.extend([(8 << 3), 0x96, 0x01]); // a varint field is skipped
        let d = decode_container(&c);
        assert_eq!(d.image, "docker.io/library/x:1");
        assert_eq!(d.labels.get("nerdctl/name").map(String::as_str), Some("web"));
        // Truncated input does not panic.
        for cut in 0..c.len() {
            let _ = decode_container(&c[..cut]);
        }
    }
}
