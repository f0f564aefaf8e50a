//! A recording proxy in front of the AWS emulator: every call a function binary makes to
//! DynamoDB or Secrets Manager passes through it (the binary's `AWS_ENDPOINT_URL` points here)
//! and is kept as the IAM permissions it needs — one per item for `TransactWriteItems`, which
//! IAM authorises as the underlying `PutItem`/`UpdateItem`/`DeleteItem`/`ConditionCheckItem`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// One permission a call needed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Need {
    /// IAM action, `dynamodb:GetItem`, `secretsmanager:GetSecretValue`, …
    pub action: String,
    /// The table, `table/index/NAME` for an index, or the secret id.
    pub resource: String,
    /// The partition key value (`dynamodb:LeadingKeys`), for item and query calls.
    pub leading_key: Option<String>,
}

/// The proxy; dropping it stops it.
pub struct Recorder {
    addr: SocketAddr,
    needs: Arc<Mutex<Vec<Need>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Forwards to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Recorder {
        let upstream: SocketAddr = upstream
            .strip_prefix("http://")
            .and_then(|a| a.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("{upstream} is not http://IP:PORT"));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let needs = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&needs);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let needs = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let needs = Arc::clone(&needs);
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                forward(upstream, &needs, request).await,
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder {
            addr,
            needs,
            server,
        }
    }

    /// The value for the function's `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every permission needed so far.
    pub fn needs(&self) -> Vec<Need> {
        self.needs.lock().expect("lock").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(
    upstream: SocketAddr,
    needs: &Mutex<Vec<Need>>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (mut parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return failure("unreadable request body");
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let document: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    needs
        .lock()
        .expect("lock")
        .extend(needs_of(&target, &document));
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    let Ok(stream) = TcpStream::connect(upstream).await else {
        return failure("the emulator is not reachable");
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return failure("no HTTP connection to the emulator");
    };
    tokio::spawn(connection);
    let Ok(answer) = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
    else {
        return failure("the emulator did not answer");
    };
    let (mut parts, body) = answer.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return failure("unreadable answer from the emulator");
    };
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(body))
}

fn failure(why: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(why.as_bytes())));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// The partition key of an item-level request part (`Key` or `Item`).
fn item_partition(part: &Value) -> Option<String> {
    string(&part["Key"]["PK"]["S"]).or_else(|| string(&part["Item"]["PK"]["S"]))
}

/// The partition value a `Query` asks for: the placeholder compared with the partition key
/// attribute (`PK` on the table, `GSI1PK` on the index) in `KeyConditionExpression`.
fn query_partition(body: &Value) -> Option<String> {
    let expression = body["KeyConditionExpression"].as_str()?;
    let attribute = if body["IndexName"].is_string() {
        "GSI1PK"
    } else {
        "PK"
    };
    let rest = expression.split(&format!("{attribute} = ")).nth(1)?;
    let placeholder: String = rest
        .chars()
        .take_while(|c| *c == ':' || c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    string(&body["ExpressionAttributeValues"][placeholder.as_str()]["S"])
}

fn table_resource(part: &Value) -> String {
    let table = part["TableName"].as_str().unwrap_or("?").to_owned();
    match part["IndexName"].as_str() {
        Some(index) => format!("{table}/index/{index}"),
        None => table,
    }
}

/// The permissions a call needs, from its `X-Amz-Target` and JSON body.
pub fn needs_of(target: &str, body: &Value) -> Vec<Need> {
    let operation = target.rsplit('.').next().unwrap_or(target);
    if target.starts_with("secretsmanager.") {
        return vec![Need {
            action: format!("secretsmanager:{operation}"),
            resource: string(&body["SecretId"]).unwrap_or_default(),
            leading_key: None,
        }];
    }
    match operation {
        "GetItem" | "PutItem" | "UpdateItem" | "DeleteItem" => vec![Need {
            action: format!("dynamodb:{operation}"),
            resource: table_resource(body),
            leading_key: item_partition(body),
        }],
        "BatchGetItem" => body["RequestItems"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(table, request)| {
                request["Keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|key| Need {
                        action: "dynamodb:BatchGetItem".into(),
                        resource: table.clone(),
                        leading_key: string(&key["PK"]["S"]),
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        "Query" => vec![Need {
            action: "dynamodb:Query".into(),
            resource: table_resource(body),
            leading_key: query_partition(body),
        }],
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|item| {
                [
                    ("Put", "PutItem"),
                    ("Update", "UpdateItem"),
                    ("Delete", "DeleteItem"),
                    ("ConditionCheck", "ConditionCheckItem"),
                ]
                .into_iter()
                .filter(|(kind, _)| item[*kind].is_object())
                .map(|(kind, action)| Need {
                    action: format!("dynamodb:{action}"),
                    resource: table_resource(&item[kind]),
                    leading_key: item_partition(&item[kind]),
                })
                .collect::<Vec<_>>()
            })
            .collect(),
        other => vec![Need {
            action: format!("dynamodb:{other}"),
            resource: table_resource(body),
            leading_key: None,
        }],
    }
}
