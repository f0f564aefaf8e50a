//! Money: the balance, deposits and withdrawals, exact amount parsing, the balance ceiling,
//! descriptions, transfers, and concurrent withdrawals and workloads that must conserve money.

use std::collections::HashMap;

use http::Method;
use lighttech::domain::{ChangeKind, Money, OperationId, Timestamp, UserId};
use lighttech::store::BalanceChange;
use rand::RngExt;
use serde_json::{Value, json};

use super::is_rfc3339_millis_z;
use super::{move_money, transfer_as};
use crate::{TestApp, TestUser, post_json};

pub async fn balance_shows_the_configured_currency(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "125").await;
    let r = t.get("/api/balance/v1/", Some(&alice.access)).await;
    r.expect(200, "");
    let j = r.json();
    assert_eq!(j["balance"], "125.00");
    assert_eq!(j["currency"], "RUB");
    assert!(is_rfc3339_millis_z(&j["updated_at"]));
    t.get("/api/balance/v1/", None)
        .await
        .expect(401, "not_authenticated");
}

pub async fn deposit_and_withdraw_return_the_operation(t: TestApp) {
    let alice = t.user("alice").await;
    let r = t
        .post(
            "/api/balance/v1/deposit/",
            Some(&alice.access),
            &json!({"amount": 10.5, "description": "salary"}),
            &[],
        )
        .await;
    r.expect(201, "");
    let op = r.json();
    assert_eq!(op["type"], "deposit");
    assert_eq!(op["amount"], "10.50");
    assert_eq!(op["balance_after"], "10.50");
    assert_eq!(op["counterparty"], Value::Null);
    assert_eq!(op["transfer_id"], Value::Null);
    assert_eq!(op["description"], "salary");
    assert!(OperationId::parse(op["id"].as_str().unwrap()).is_some());
    assert!(is_rfc3339_millis_z(&op["created_at"]));
    assert_eq!(op.as_object().unwrap().len(), 8);
    let w = move_money(&t, &alice, "withdraw", "0.50").await;
    w.expect(201, "");
    assert_eq!(w.json()["type"], "withdrawal");
    assert_eq!(w.json()["balance_after"], "10.00");
    assert_eq!(w.json()["description"], Value::Null);
    assert_eq!(t.balance(&alice).await, "10.00");
    let ops = t.all_operations(&alice).await;
    assert_eq!(
        ops,
        vec![w.json(), op],
        "history shows exactly what was returned"
    );
}

pub async fn amounts_are_parsed_exactly_or_refused(t: TestApp) {
    let alice = t.user("alice").await;
    let deposit = |amount: Value| {
        let t = t.clone();
        let token = alice.access.clone();
        async move {
            t.post(
                "/api/balance/v1/deposit/",
                Some(&token),
                &json!({ "amount": amount }),
                &[],
            )
            .await
        }
    };
    let raw = |body: &'static str| {
        let t = t.clone();
        let auth = format!("Bearer {}", alice.access);
        async move {
            t.send(
                Method::POST,
                "/api/balance/v1/deposit/",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                Some(body.as_bytes().to_vec()),
            )
            .await
        }
    };
    let mut expected_total = 0i64;
    for (amount, minor) in [
        (json!("10.5"), 1050),
        (json!("10.50"), 1050),
        (json!("7"), 700),
        (json!(0.01), 1),
        (json!("1000000000.00"), 100_000_000_000),
    ] {
        let r = deposit(amount.clone()).await;
        r.expect(201, "");
        assert_eq!(
            r.json()["amount"],
            Money::from_minor(minor).to_string(),
            "{amount}"
        );
        expected_total += minor;
    }
    // Number literals that a float would round are kept exact.
    let r = raw(r#"{"amount": 0.29}"#).await;
    r.expect(201, "");
    assert_eq!(r.json()["amount"], "0.29");
    expected_total += 29;
    for body in [
        r#"{"amount": 1.001}"#,
        r#"{"amount": "1.001"}"#,
        r#"{"amount": 0}"#,
        r#"{"amount": "0.00"}"#,
        r#"{"amount": -5}"#,
        r#"{"amount": "-5"}"#,
        r#"{"amount": 1e3}"#,
        r#"{"amount": "1E3"}"#,
        r#"{"amount": "NaN"}"#,
        r#"{"amount": "Infinity"}"#,
        r#"{"amount": ""}"#,
        r#"{"amount": "ten"}"#,
        r#"{"amount": null}"#,
        r#"{"amount": true}"#,
        r#"{"amount": [1]}"#,
        r#"{"amount": {"value": 1}}"#,
        r#"{"amount": "1000000000.01"}"#,
        r#"{"amount": 99999999999999999999999999999999999999}"#,
        r#"{"amount": 1e999999}"#,
        r#"{}"#,
    ] {
        let r = raw(body).await;
        r.expect(400, "validation_error");
        assert!(
            r.json()["errors"]["amount"].is_array(),
            "{body}: {}",
            r.json()
        );
    }
    assert_eq!(
        t.balance(&alice).await,
        Money::from_minor(expected_total).to_string()
    );
}

pub async fn a_withdrawal_above_the_balance_is_refused(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "10").await;
    let r = move_money(&t, &alice, "withdraw", "25").await;
    r.expect(422, "insufficient_funds");
    assert_eq!(r.json()["detail"], "Balance 10.00 is less than 25.00");
    assert_eq!(r.json()["title"], "Insufficient funds");
    assert_eq!(r.json()["status"], 422);
    assert_eq!(r.json()["type"], "about:blank");
    assert!(r.json().get("errors").is_none());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    assert_eq!(t.balance(&alice).await, "10.00");
    assert_eq!(t.all_operations(&alice).await.len(), 1);
}

pub async fn a_deposit_past_the_balance_ceiling_is_refused(t: TestApp) {
    let alice = t.user("alice").await;
    // Reaching the ceiling through the API takes ten thousand maximal deposits; seed it.
    let user = UserId::parse(&alice.id).unwrap();
    t.app
        .store
        .apply_change(&BalanceChange {
            user,
            kind: ChangeKind::Deposit,
            amount: Money::from_minor(Money::MAX_BALANCE.minor() - 100),
            description: None,
            operation_id: OperationId::new(),
            now: Timestamp::now(),
            idempotency: None,
            session: None,
        })
        .await
        .unwrap();
    move_money(&t, &alice, "deposit", "1.01")
        .await
        .expect(422, "balance_limit_exceeded");
    t.deposit(&alice, "1.00").await;
    assert_eq!(t.balance(&alice).await, "9999999999999.99");
    // A transfer that would push the recipient past the ceiling fails as a whole.
    let bob = t.user("bob").await;
    t.deposit(&bob, "5").await;
    transfer_as(&t, &bob, "alice", "0.01")
        .await
        .expect(422, "balance_limit_exceeded");
    assert_eq!(t.balance(&bob).await, "5.00");
}

pub async fn descriptions_are_limited_to_255_characters(t: TestApp) {
    let alice = t.user("alice").await;
    let ok = t
        .post(
            "/api/balance/v1/deposit/",
            Some(&alice.access),
            &json!({"amount": "1", "description": "ж".repeat(255)}),
            &[],
        )
        .await;
    ok.expect(201, "");
    assert_eq!(ok.json()["description"], "ж".repeat(255));
    for description in [json!("x".repeat(256)), json!(5), json!(["a"])] {
        t.post(
            "/api/balance/v1/deposit/",
            Some(&alice.access),
            &json!({"amount": "1", "description": description}),
            &[],
        )
        .await
        .expect(400, "validation_error");
    }
    assert_eq!(t.balance(&alice).await, "1.00");
}

pub async fn transfers_move_money_and_both_sides_see_it(t: TestApp) {
    let alice = t.user("alice").await;
    let bob = t.user("Bob").await;
    t.deposit(&alice, "100").await;
    let r = t
        .post(
            "/api/balance/v1/transfer/",
            Some(&alice.access),
            &json!({"to": "bOB", "amount": "25", "description": "rent"}),
            &[],
        )
        .await;
    r.expect(201, "");
    let out = r.json();
    assert_eq!(out["type"], "transfer_out");
    assert_eq!(out["amount"], "25.00");
    assert_eq!(out["balance_after"], "75.00");
    assert_eq!(out["counterparty"]["id"], bob.id.as_str());
    assert_eq!(out["counterparty"]["username"], "Bob");
    assert_eq!(out["description"], "rent");
    let transfer_id = out["transfer_id"].as_str().unwrap().to_owned();
    let bob_ops = t.all_operations(&bob).await;
    assert_eq!(bob_ops.len(), 1);
    assert_eq!(bob_ops[0]["type"], "transfer_in");
    assert_eq!(bob_ops[0]["transfer_id"], transfer_id.as_str());
    assert_eq!(bob_ops[0]["balance_after"], "25.00");
    assert_eq!(bob_ops[0]["counterparty"]["username"], "alice");
    assert_eq!(bob_ops[0]["counterparty"]["id"], alice.id.as_str());
    assert_eq!(t.balance(&alice).await, "75.00");
    assert_eq!(t.balance(&bob).await, "25.00");
}

pub async fn failed_transfers_change_nothing(t: TestApp) {
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    t.deposit(&alice, "10").await;
    let transfer = |body: Value| {
        let t = t.clone();
        let token = alice.access.clone();
        async move {
            t.post("/api/balance/v1/transfer/", Some(&token), &body, &[])
                .await
        }
    };
    transfer(json!({"to": "ALICE", "amount": "1"}))
        .await
        .expect(422, "self_transfer");
    transfer(json!({"to": "nobody", "amount": "1"}))
        .await
        .expect(404, "recipient_not_found");
    transfer(json!({"to": "not a username!", "amount": "1"}))
        .await
        .expect(404, "recipient_not_found");
    let r = transfer(json!({"to": "bob", "amount": "10.01"})).await;
    r.expect(422, "insufficient_funds");
    assert_eq!(r.json()["detail"], "Balance 10.00 is less than 10.01");
    transfer(json!({"amount": "1"}))
        .await
        .expect(400, "validation_error");
    transfer(json!({"to": "", "amount": "1"}))
        .await
        .expect(400, "validation_error");
    transfer(json!({"to": 5, "amount": "1"}))
        .await
        .expect(400, "validation_error");
    transfer(json!({"to": "bob", "amount": "0"}))
        .await
        .expect(400, "validation_error");
    assert_eq!(t.balance(&alice).await, "10.00");
    assert_eq!(t.balance(&bob).await, "0.00");
    assert_eq!(t.all_operations(&alice).await.len(), 1);
    assert!(t.all_operations(&bob).await.is_empty());
}

pub async fn parallel_withdrawals_pay_out_exactly_the_balance(t: TestApp) {
    let alice = t.user("alice").await;
    t.deposit(&alice, "10.00").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = t.app.clone();
        let token = alice.access.clone();
        tasks.push(tokio::spawn(async move {
            post_json(
                &app,
                "/api/balance/v1/withdraw/",
                Some(&token),
                &json!({"amount": "1.00"}),
                &[],
            )
            .await
        }));
    }
    let (mut paid, mut refused) = (0, 0);
    for task in tasks {
        let r = task.await.unwrap();
        match (r.status, r.code().as_str()) {
            (201, _) => paid += 1,
            (422, "insufficient_funds") => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!("50 parallel withdrawals of 1.00 from 10.00: {paid} paid, {refused} refused");
    assert_eq!((paid, refused), (10, 40));
    assert_eq!(t.balance(&alice).await, "0.00");
    let ops = t.all_operations(&alice).await;
    assert_eq!(ops.len(), 11);
    assert_eq!(ops[0]["balance_after"], "0.00");
}

pub async fn the_bank_workload_conserves_money(t: TestApp) {
    let mut users: Vec<TestUser> = Vec::new();
    for i in 0..6 {
        let u = t.user(&format!("bank{i}")).await;
        t.deposit(&u, "100.00").await;
        users.push(u);
    }
    let rounds = crate::contention_rounds(25);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = t.app.clone();
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = crate::seeded_rng("the_bank_workload_conserves_money", worker as u64);
            let (mut ok, mut refused) = (0, 0);
            for n in 0..rounds {
                let from = rng.random_range(0..users.len());
                let to = (from + rng.random_range(1..users.len())) % users.len();
                let amount = Money::from_minor(rng.random_range(1..=5_000));
                let key = format!("w{worker}-{n}");
                // A 503 (the store overloaded, as a busy emulator can be) is retried with the
                // same key, as the contract tells clients to: it may have moved money once,
                // never twice.
                for attempt in 1.. {
                    let r = post_json(
                        &app,
                        "/api/balance/v1/transfer/",
                        Some(&users[from].access),
                        &json!({"to": users[to].username, "amount": amount.to_string()}),
                        &[("idempotency-key", key.as_str())],
                    )
                    .await;
                    match (r.status, r.code().as_str()) {
                        (201, _) => ok += 1,
                        (422, "insufficient_funds") => refused += 1,
                        (503, "service_unavailable") if attempt < 20 => {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                        other => panic!("unexpected {other:?}: {}", r.json()),
                    }
                    break;
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (o, r) = task.await.unwrap();
        ok += o;
        refused += r;
    }
    let mut total = 0i64;
    let mut sides: HashMap<String, usize> = HashMap::new();
    for u in &users {
        let balance = t.balance(u).await;
        let ops = t.all_operations(u).await;
        assert_eq!(
            ops[0]["balance_after"].as_str(),
            Some(balance.as_str()),
            "newest balance_after equals the balance"
        );
        for op in &ops {
            if let Some(id) = op["transfer_id"].as_str() {
                *sides.entry(id.to_owned()).or_default() += 1;
            }
        }
        total += Money::parse_amount(&balance).map_or(0, |m| m.minor());
    }
    eprintln!("API bank workload: {ok} transfers, {refused} refused, total {total} of 60000");
    assert_eq!(total, 60_000, "the total is conserved");
    assert_eq!(sides.len(), ok);
    assert!(
        sides.values().all(|n| *n == 2),
        "both sides of every transfer"
    );
    assert_eq!(ok + refused, 8 * rounds);
}
