//! A client for the two unary calls of containerd's gRPC API the daemon needs to name a plain
//! `ctr`/nerdctl container's image (`Containers/Get`, `Images/Get`): tonic over the unix
//! socket, with the few protobuf messages declared with prost's derive (no protoc at build
//! time; fields not declared are skipped by prost). Every call has a deadline and runs on the
//! metadata thread, so a containerd that is down or hung never stalls discovery or the hot path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiContainer {
    pub image: String,
    pub labels: BTreeMap<String, String>,
}

/// The messages of `containerd.services.containers.v1` and `.images.v1` that are used: only
/// the fields read.
pub mod pb {
    use std::collections::HashMap;

    /// `GetContainerRequest` and `GetImageRequest`: the id or the name, field 1.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetRequest {
        #[prost(string, tag = "1")]
        pub key: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(map = "string, string", tag = "2")]
        pub labels: HashMap<String, String>,
        #[prost(string, tag = "3")]
        pub image: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetContainerResponse {
        #[prost(message, optional, tag = "1")]
        pub container: Option<Container>,
    }

    /// `containerd.types.Descriptor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Descriptor {
        #[prost(string, tag = "1")]
        pub media_type: String,
        #[prost(string, tag = "2")]
        pub digest: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "3")]
        pub target: Option<Descriptor>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetImageResponse {
        #[prost(message, optional, tag = "1")]
        pub image: Option<Image>,
    }
}

/// A failed call to containerd's API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No connection, or the connection failed (the message has the causes).
    #[error("containerd {method}: {what}: {detail}")]
    Transport { method: &'static str, what: &'static str, detail: String },
    /// containerd answered with a gRPC error status.
    #[error("containerd {method}: {code:?}: {message}")]
    Status { method: &'static str, code: tonic::Code, message: String },
    /// No answer within the deadline.
    #[error("containerd {method}: no answer within {deadline:?}")]
    Timeout { method: &'static str, deadline: Duration },
    /// The answer lacks what was asked for.
    #[error("containerd {method}: {what}")]
    Missing { method: &'static str, what: &'static str },
}

/// An error and its causes on one line (tonic's own Display says only "transport error").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// One unary call of `method` (like `/containerd.services.containers.v1.Containers/Get`) in
/// `namespace`, within `deadline` (connecting included).
fn unary<Req, Resp>(
    rt: &tokio::runtime::Runtime,
    address: &Path,
    namespace: &str,
    method: &'static str,
    request: Req,
    deadline: Duration,
) -> Result<Resp, ApiError>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let address: PathBuf = address.to_path_buf();
    let call = async move {
        let e = |what: &'static str, err: &(dyn std::error::Error + 'static)| ApiError::Transport {
            method,
            what,
            detail: chain(err),
        };
        // The URI is required by the API and unused: the connector dials the socket.
        let channel = tonic::transport::Endpoint::from_static("http://containerd")
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let p = address.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(p).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
                }
            }))
            .await
            .map_err(|x| e("connect", &x))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|x| e("ready", &x))?;
        let mut req = tonic::Request::new(request);
        let ns = namespace.parse().map_err(|x| e("namespace", &x))?;
        req.metadata_mut().insert("containerd-namespace", ns);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let resp = grpc
            .unary(req, PathAndQuery::from_static(method), codec)
            .await
            .map_err(|s| ApiError::Status { method, code: s.code(), message: s.message().to_owned() })?;
        Ok(resp.into_inner())
    };
    rt.block_on(async {
        tokio::time::timeout(deadline, call).await.map_err(|_| ApiError::Timeout { method, deadline })?
    })
}

const CONTAINERS_GET: &str = "/containerd.services.containers.v1.Containers/Get";
const IMAGES_GET: &str = "/containerd.services.images.v1.Images/Get";

/// `Containers/Get` for `id` in `namespace`.
pub fn get_container(
    rt: &tokio::runtime::Runtime,
    address: &Path,
    namespace: &str,
    id: &str,
    deadline: Duration,
) -> Result<ApiContainer, ApiError> {
    let resp: pb::GetContainerResponse =
        unary(rt, address, namespace, CONTAINERS_GET, pb::GetRequest { key: id.to_owned() }, deadline)?;
    let c = resp.container.ok_or(ApiError::Missing { method: CONTAINERS_GET, what: "no container" })?;
    Ok(ApiContainer { image: c.image, labels: c.labels.into_iter().collect() })
}

/// `Images/Get` for `name`: its target (manifest or index) digest.
pub fn get_image_digest(
    rt: &tokio::runtime::Runtime,
    address: &Path,
    namespace: &str,
    name: &str,
    deadline: Duration,
) -> Result<Option<String>, ApiError> {
    let resp: pb::GetImageResponse =
        unary(rt, address, namespace, IMAGES_GET, pb::GetRequest { key: name.to_owned() }, deadline)?;
    Ok(resp.image.and_then(|i| i.target).map(|d| d.digest).filter(|d| !d.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::pb::*;
    use prost::Message;

    /// The wire bytes containerd sends (hand-encoded here: field numbers from its .proto files)
    /// decode into the fields read; fields not declared are skipped.
    #[test]
    fn responses_decode_the_fields_used_and_skip_the_rest() {
        fn field(n: u8, v: &[u8]) -> Vec<u8> {
            let mut out = vec![(n << 3) | 2, v.len() as u8];
            out.extend_from_slice(v);
            out
        }
        let mut label = field(1, b"nerdctl/name");
        label.extend(field(2, b"web"));
        let mut c = field(1, b"c1");
        c.extend(field(2, &label));
        c.extend(field(3, b"docker.io/library/x:1"));
        c.extend(field(4, b"\n\x14io.containerd.runc.v2"));
        c.extend([(8 << 3), 0x96, 0x01]); // a varint field not declared
        let resp = field(1, &c);
        let d = GetContainerResponse::decode(&resp[..]).unwrap().container.unwrap();
        assert_eq!(d.image, "docker.io/library/x:1");
        assert_eq!(d.labels.get("nerdctl/name").map(String::as_str), Some("web"));
        // Truncated input is an error, never a panic.
        for cut in 0..resp.len() {
            let _ = GetContainerResponse::decode(&resp[..cut]);
        }
        let desc = [field(1, b"application/vnd.oci.image.index.v1+json"), field(2, b"sha256:ab")].concat();
        let img = field(1, &[field(1, b"x:1"), field(3, &desc)].concat());
        let got = GetImageResponse::decode(&img[..]).unwrap().image.unwrap().target.unwrap();
        assert_eq!(got.digest, "sha256:ab");
        assert_eq!(GetRequest { key: "abc".into() }.encode_to_vec(), vec![0x0a, 3, b'a', b'b', b'c']);
    }
}
