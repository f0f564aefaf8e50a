//! What each endpoint costs in DynamoDB: every call it makes, recorded by a [`DynamoProxy`] in
//! front of moto, and the capacity those calls consume, priced by DynamoDB's rules for on-demand
//! tables (moto's `ConsumedCapacity` is a fixed placeholder, so the units are computed here from
//! the items' real sizes, read back from moto after each request):
//!
//! - a strongly consistent read: 1 read unit per 4 KB of the item (0.5 when eventually
//!   consistent), at least one unit per item; a `Query`: the items it evaluates, summed, then
//!   per 4 KB; a `BatchGetItem`: each key as a `GetItem`;
//! - a write (`PutItem`, `UpdateItem`, `DeleteItem`): 1 write unit per KB of the item, at least
//!   1, charged whether or not its condition holds; every action of a `TransactWriteItems`
//!   (its `ConditionCheck`s included, counted like writes here): 2 units per KB;
//! - a write that puts or changes an item carrying `GSI1PK` also writes the index: 1 unit per
//!   KB of the projected item.
//!
//! `cargo test -p lighttech-tests --test suite dynamodb::capacity -- --nocapture` prints the
//! table docs/deploy.md quotes; the test asserts the shape every money movement must keep (one
//! transaction, nothing written outside it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use lighttech_tests::dynamo_proxy::{DynamoProxy, Verdict};
use lighttech_tests::{StoreFixture, TestApp, dynamo_store};
use serde_json::{Value, json};

/// On-demand list prices, us-east-1, USD per million request units (after the November 2024
/// reduction): docs/deploy.md multiplies by these.
pub const USD_PER_MILLION_READ_UNITS: f64 = 0.125;
pub const USD_PER_MILLION_WRITE_UNITS: f64 = 0.625;

type Item = std::collections::HashMap<String, AttributeValue>;

/// DynamoDB's size of a value (names are counted by the caller): strings and binaries by
/// their bytes, a number by about one byte per two digits plus one, a map or list 3 bytes plus
/// one per element plus its contents.
fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        _ => 1,
    }
}

fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The request's JSON attribute value as the SDK's.
fn attribute(value: &Value) -> AttributeValue {
    let (kind, inner) = value
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("an attribute value");
    match kind.as_str() {
        "S" => AttributeValue::S(inner.as_str().unwrap_or_default().to_owned()),
        "N" => AttributeValue::N(inner.as_str().unwrap_or_default().to_owned()),
        "BOOL" => AttributeValue::Bool(inner.as_bool().unwrap_or_default()),
        "NULL" => AttributeValue::Null(true),
        "M" => AttributeValue::M(item(inner)),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .into_iter()
                .flatten()
                .map(attribute)
                .collect(),
        ),
        "SS" => AttributeValue::Ss(
            inner
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
        ),
        other => panic!("attribute type {other} is not used by the store"),
    }
}

fn item(map: &Value) -> Item {
    map.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), attribute(v)))
        .collect()
}

/// One endpoint's bill: calls by operation, read and write units.
#[derive(Default, Debug)]
struct Bill {
    calls: BTreeMap<String, u32>,
    read_units: f64,
    write_units: f64,
}

impl Bill {
    fn usd_per_million(&self) -> f64 {
        self.read_units * USD_PER_MILLION_READ_UNITS
            + self.write_units * USD_PER_MILLION_WRITE_UNITS
    }

    fn calls_text(&self) -> String {
        self.calls
            .iter()
            .map(|(op, n)| {
                if *n == 1 {
                    op.clone()
                } else {
                    format!("{n}× {op}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads the current state of items straight from moto.
struct Meter {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl Meter {
    async fn current(&self, key: Item) -> Option<Item> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .expect("read an item back from moto")
            .item
    }

    fn key_of(item: &Item) -> Item {
        ["PK", "SK"]
            .iter()
            .filter_map(|k| item.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect()
    }

    /// Read units of reading `key` now.
    async fn read_units(&self, key: Item, consistent: bool) -> f64 {
        let size = self.current(key).await.map_or(0, |i| item_size(&i));
        let units = size.div_ceil(4096).max(1) as f64;
        if consistent { units } else { units / 2.0 }
    }

    /// Write units of a write to `key` (the item's size now, or the request's item if it is gone);
    /// `factor` 2 inside a transaction. The index's share is added when the item is a profile.
    async fn write_units(&self, key: Item, requested: Option<&Item>, factor: f64) -> f64 {
        let now = self.current(key).await;
        let written = now.as_ref().or(requested);
        let size = written.map_or(0, item_size);
        let mut units = factor * size.div_ceil(1024).max(1) as f64;
        if let Some(item) = written.filter(|i| i.contains_key("GSI1PK")) {
            let projected: usize = item
                .iter()
                .filter(|(k, _)| {
                    ["PK", "SK", "GSI1PK", "GSI1SK"].contains(&k.as_str())
                        || lighttech::store::dynamo::GSI1_PROJECTED.contains(&k.as_str())
                })
                .map(|(k, v)| k.len() + value_size(v))
                .sum();
            units += projected.div_ceil(1024).max(1) as f64;
        }
        units
    }

    /// The read units of a `Query`: what it evaluates (its filter and projection removed, as
    /// DynamoDB charges before applying them), run again now.
    async fn query_units(&self, body: &Value) -> f64 {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(body["KeyConditionExpression"].as_str().unwrap_or_default())
            .set_expression_attribute_values(Some(item(&body["ExpressionAttributeValues"])))
            .consistent_read(body["ConsistentRead"].as_bool().unwrap_or(false));
        if let Some(index) = body["IndexName"].as_str() {
            q = q.index_name(index);
        }
        if let Some(limit) = body["Limit"].as_i64() {
            q = q.limit(limit as i32);
        }
        if let Some(forward) = body["ScanIndexForward"].as_bool() {
            q = q.scan_index_forward(forward);
        }
        if let Some(names) = body["ExpressionAttributeNames"].as_object() {
            for (k, v) in names {
                // Only names the key condition uses are needed, but unused ones are refused.
                if body["KeyConditionExpression"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(k.as_str())
                {
                    q = q.expression_attribute_names(k, v.as_str().unwrap_or_default());
                }
            }
        }
        if body["ExclusiveStartKey"].is_object() {
            q = q.set_exclusive_start_key(Some(item(&body["ExclusiveStartKey"])));
        }
        let out = q.send().await.expect("run the query again on moto");
        let size: usize = out.items().iter().map(item_size).sum();
        let units = size.div_ceil(4096).max(1) as f64;
        if body["ConsistentRead"].as_bool().unwrap_or(false) {
            units
        } else {
            units / 2.0
        }
    }

    async fn bill(&self, calls: &[(String, Value)]) -> Bill {
        let mut bill = Bill::default();
        for (operation, body) in calls {
            *bill.calls.entry(canonical(operation)).or_default() += 1;
            match operation.as_str() {
                "getitem" => {
                    bill.read_units += self
                        .read_units(item(&body["Key"]), body["ConsistentRead"] == true)
                        .await
                }
                "batchgetitem" => {
                    for request in body["RequestItems"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(_, r)| r)
                    {
                        for key in request["Keys"].as_array().into_iter().flatten() {
                            bill.read_units += self
                                .read_units(item(key), request["ConsistentRead"] == true)
                                .await;
                        }
                    }
                }
                "query" => bill.read_units += self.query_units(body).await,
                "putitem" => {
                    let put = item(&body["Item"]);
                    bill.write_units += self.write_units(Self::key_of(&put), Some(&put), 1.0).await
                }
                "updateitem" | "deleteitem" => {
                    bill.write_units += self.write_units(item(&body["Key"]), None, 1.0).await
                }
                "transactwriteitems" => {
                    for action in body["TransactItems"].as_array().into_iter().flatten() {
                        let (kind, inner) = action
                            .as_object()
                            .and_then(|o| o.iter().next())
                            .expect("a transaction action");
                        bill.write_units += if kind == "Put" {
                            let put = item(&inner["Item"]);
                            self.write_units(Self::key_of(&put), Some(&put), 2.0).await
                        } else {
                            self.write_units(item(&inner["Key"]), None, 2.0).await
                        };
                    }
                }
                other => panic!("{other}: not an operation the functions call"),
            }
        }
        bill
    }
}

fn canonical(operation: &str) -> String {
    [
        "GetItem",
        "BatchGetItem",
        "Query",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "TransactWriteItems",
    ]
    .into_iter()
    .find(|o| o.eq_ignore_ascii_case(operation))
    .unwrap_or(operation)
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_s_dynamodb_calls_and_capacity() {
    let recorded: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let sink = Arc::clone(&recorded);
    let proxy = DynamoProxy::start(move |call| {
        sink.lock()
            .expect("the recording")
            .push((call.operation.clone(), call.body.clone()));
        Verdict::Forward
    })
    .await;
    let direct = dynamo_store().await;
    let meter = Meter {
        client: aws_sdk_dynamodb::Client::new(&lighttech_tests::emulator_sdk_config(
            &lighttech_tests::dynamodb_endpoint(),
        )),
        table: direct.table().to_owned(),
    };
    let t = TestApp::new(StoreFixture::new(
        Arc::new(proxy.retrying_store(direct.table())),
        (),
    ))
    .await;
    let bob = t.user("bob").await;

    let mut rows: Vec<(&str, Bill)> = Vec::new();
    macro_rules! measure {
        ($name:expr, $status:expr, $request:expr) => {{
            recorded.lock().expect("the recording").clear();
            let response = $request;
            assert_eq!(
                response.status,
                $status,
                "{}: {}",
                $name,
                String::from_utf8_lossy(&response.body)
            );
            let calls = std::mem::take(&mut *recorded.lock().expect("the recording"));
            rows.push(($name, meter.bill(&calls).await));
            response
        }};
    }

    let register = json!({"username": "alice", "email": "alice@example.com",
        "password": lighttech_tests::PASSWORD});
    measure!(
        "register",
        201,
        t.post("/api/auth/v1/register/", None, &register, &[]).await
    );
    let login = json!({"username": "alice", "password": lighttech_tests::PASSWORD});
    let tokens = measure!(
        "login",
        200,
        t.post("/api/auth/v1/login/", None, &login, &[]).await
    )
    .json();
    let access = tokens["access"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh"].as_str().expect("refresh").to_owned();
    let token = Some(access.as_str());
    measure!("me", 200, t.get("/api/auth/v1/me/", token).await);
    measure!("balance", 200, t.get("/api/balance/v1/", token).await);
    let amount = |a: &str| json!({"amount": a});
    measure!(
        "deposit",
        201,
        t.post(
            "/api/balance/v1/deposit/",
            token,
            &amount("100.00"),
            &[("idempotency-key", "d1")]
        )
        .await
    );
    measure!(
        "deposit, replayed by its key",
        201,
        t.post(
            "/api/balance/v1/deposit/",
            token,
            &amount("100.00"),
            &[("idempotency-key", "d1")]
        )
        .await
    );
    measure!(
        "withdraw",
        201,
        t.post(
            "/api/balance/v1/withdraw/",
            token,
            &amount("10.00"),
            &[("idempotency-key", "w1")]
        )
        .await
    );
    measure!(
        "transfer",
        201,
        t.post(
            "/api/balance/v1/transfer/",
            token,
            &json!({"to": bob.username, "amount": "5.00"}),
            &[("idempotency-key", "t1")]
        )
        .await
    );
    measure!(
        "withdraw, insufficient funds",
        422,
        t.post("/api/balance/v1/withdraw/", token, &amount("1000.00"), &[])
            .await
    );
    let page = measure!(
        "operations (a page of 20, cache miss)",
        200,
        t.get("/api/balance/v1/operations/", token).await
    );
    let etag = page.header("etag").expect("an ETag");
    measure!(
        "operations (cache hit)",
        200,
        t.get("/api/balance/v1/operations/", token).await
    );
    measure!(
        "operations (If-None-Match, 304)",
        304,
        t.send(
            http::Method::GET,
            "/api/balance/v1/operations/",
            &[
                ("authorization", &format!("Bearer {access}")),
                ("if-none-match", &etag)
            ],
            None
        )
        .await
    );
    measure!(
        "sessions",
        200,
        t.get("/api/auth/v1/sessions/", token).await
    );
    let rotated = measure!(
        "token refresh",
        200,
        t.post(
            "/api/auth/v1/token/refresh/",
            None,
            &json!({"refresh": refresh}),
            &[]
        )
        .await
    )
    .json();
    let access = rotated["access"].as_str().expect("access").to_owned();
    measure!(
        "logout",
        204,
        t.post("/api/auth/v1/logout/", Some(&access), &json!({}), &[])
            .await
    );
    measure!("health", 200, t.get("/api/health/", None).await);

    println!();
    println!("| endpoint | DynamoDB calls | read units | write units | USD per million |");
    println!("|---|---|---:|---:|---:|");
    for (name, bill) in &rows {
        println!(
            "| {name} | {} | {} | {} | {:.2} |",
            bill.calls_text(),
            bill.read_units,
            bill.write_units,
            bill.usd_per_million()
        );
    }

    let of = |name: &str| &rows.iter().find(|(n, _)| *n == name).expect(name).1;
    for name in ["deposit", "withdraw", "transfer"] {
        let bill = of(name);
        assert_eq!(
            bill.calls.get("TransactWriteItems"),
            Some(&1),
            "{name}: one transaction: {bill:?}"
        );
        for plain in ["PutItem", "UpdateItem", "DeleteItem"] {
            assert!(
                !bill.calls.contains_key(plain),
                "{name} writes outside its transaction: {bill:?}"
            );
        }
        assert!(
            bill.write_units >= 6.0,
            "{name}: at least its account, operation and key: {bill:?}"
        );
    }
    // A replay is the same transaction refused on its idempotency item, then that item read.
    assert_eq!(
        of("deposit, replayed by its key")
            .calls
            .get("TransactWriteItems"),
        Some(&1)
    );
    assert!(
        !of("operations (cache hit)").calls.contains_key("Query"),
        "a hit queries nothing"
    );
    assert_eq!(of("health").calls.get("GetItem"), Some(&1));
    for (name, bill) in &rows {
        assert!(
            bill.read_units + bill.write_units > 0.0,
            "{name} costs nothing? {bill:?}"
        );
    }
}
