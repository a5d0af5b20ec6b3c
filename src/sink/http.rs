//! One HTTP POST (HTTP/1.1, plain or TLS) to an export endpoint: the webhook's JSON, OTLP/HTTP's
//! protobuf. A connection per post; a timeout for the whole exchange.

use driftgate_core::config::Webhook;

/// One POST; `Err` for a connection failure, a timeout or a status that is not 2xx.
pub(super) async fn post(
    w: &Webhook,
    tls: Option<&super::tls::Tls>,
    body: &[u8],
    content_type: &'static str,
) -> Result<(), String> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(w.authority.as_str()).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        match tls {
            Some(t) => {
                let stream = t
                    .connector
                    .connect(t.server_name.clone(), stream)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(w, hyper_util::rt::TokioIo::new(stream), body, content_type).await
            }
            None => send(w, hyper_util::rt::TokioIo::new(stream), body, content_type).await,
        }
    };
    match tokio::time::timeout(w.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {}s", w.timeout.as_secs())),
    }
}

/// The POST over an open connection (plain or TLS).
async fn send<S>(w: &Webhook, io: S, body: &[u8], content_type: &'static str) -> Result<(), String>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(w.path.as_str())
            .header(hyper::header::HOST, w.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::USER_AGENT, concat!("driftgate/", env!("CARGO_PKG_VERSION")));
        for (k, v) in &w.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // Read the answer to its end, so the connection closes cleanly.
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}
