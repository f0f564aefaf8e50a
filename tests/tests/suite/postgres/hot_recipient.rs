//! Many senders paying one recipient: the batched transfers of migrations 9 and 10, and a
//! hot recipient's credits refused by the database.

use std::sync::Arc;

use lighttech::domain::{Money, Timestamp, UserId};
use lighttech::store::postgres::PgStore;
use lighttech::store::{Applied, Store, StoreError, TransferCommand};
use lighttech_tests::{PgDatabase, conformance, conformance_user};

const SENDERS: usize = 40;
/// What each sender holds at the start.
const OPENING: i64 = 100;

/// A fresh database with a recipient, `shop`, and [`SENDERS`] users holding [`OPENING`] each.
struct HotRecipient {
    pg: Arc<PgStore>,
    store: Arc<dyn Store>,
    shop: UserId,
    senders: Vec<UserId>,
    _db: PgDatabase,
}

impl HotRecipient {
    async fn new() -> Self {
        let db = PgDatabase::create().await;
        let pg = Arc::new(PgStore::connect(&db.url).unwrap());
        pg.migrate().await.unwrap();
        let store: Arc<dyn Store> = pg.clone();
        let shop = conformance_user(&store, "shop").await;
        let mut ids = Vec::new();
        for i in 0..SENDERS {
            let id = conformance_user(&store, &format!("sender{i}")).await;
            conformance::deposit(&store, id, OPENING).await;
            ids.push(id);
        }
        HotRecipient {
            pg,
            store,
            shop,
            senders: ids,
            _db: db,
        }
    }
}

/// A transfer to `shop`; with `key`, idempotent under it.
fn to_shop(from: UserId, amount: i64, key: Option<&str>) -> TransferCommand {
    let mut command = conformance::transfer(from, "shop", amount);
    let later = Timestamp::now().plus_seconds(3600);
    command.idempotency = key.map(|k| conformance::stamp(k, &format!("shop {amount}"), later));
    command
}

/// A hot recipient's credits refused by PostgreSQL: a trigger fails every update that raises an
/// account's balance with a serialization failure (40001), which the store retries and then
/// gives up on.
#[tokio::test]
async fn a_refused_transfer_into_a_hot_account_is_503_and_its_retry_applies_once() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    let pg = PgStore::connect(&url).unwrap();
    pg.migrate().await.unwrap();
    let t =
        lighttech_tests::TestApp::new(lighttech_tests::StoreFixture::new(Arc::new(pg), db)).await;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let refuse = async {
        admin
            .batch_execute(
                "CREATE FUNCTION lt_injected_conflict() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END $$; \
                 CREATE TRIGGER lt_injected_conflict BEFORE UPDATE ON accounts FOR EACH ROW \
                 WHEN (NEW.balance > OLD.balance) EXECUTE FUNCTION lt_injected_conflict();",
            )
            .await
            .unwrap();
    };
    let allow = async {
        admin
            .batch_execute("DROP TRIGGER lt_injected_conflict ON accounts")
            .await
            .unwrap();
    };
    lighttech_tests::hot::a_refused_transfer_into_a_hot_account_is_503_and_its_retry_applies_once(
        &t, &t, refuse, allow,
    )
    .await;
}

/// Many senders paying one recipient at once: transfers queued behind one in flight are applied
/// together (migration 9), each still on its own — a transfer past its sender's balance is
/// refused alone, two racing requests with one key apply once — and the recipient's ledger is
/// contiguous with every balance_after exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_into_one_recipient_are_batched_and_each_applied_or_refused_alone() {
    let hot = HotRecipient::new().await;
    let (pg, store, shop, senders) = (&hot.pg, &hot.store, hot.shop, &hot.senders);
    // Every fifth sender asks for more than it has; sender 1 sends the same keyed request twice.
    let mut commands = Vec::new();
    for (i, from) in senders.iter().enumerate() {
        let amount = if i % 5 == 0 { 500 } else { 60 };
        let key = (i == 1).then_some("twice");
        commands.push(to_shop(*from, amount, key));
    }
    commands.push(to_shop(senders[1], 60, Some("twice")));
    let results = futures_join(store, commands).await;

    let (mut done, mut replayed, mut refused) = (0, 0, 0);
    for result in &results {
        match result {
            Ok(Applied::Done(_)) => done += 1,
            Ok(Applied::AlreadyRecorded(_)) => replayed += 1,
            Err(StoreError::InsufficientFunds { balance }) => {
                assert_eq!(
                    balance.minor(),
                    OPENING,
                    "refused with the sender's balance"
                );
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((done, replayed, refused), (SENDERS - 8, 1, 8));
    assert!(
        pg.batched_transfers() > 0,
        "transfers queued behind one in flight were applied together"
    );
    let shop_account = store.account(shop).await.unwrap().unwrap();
    assert_eq!(shop_account.balance.minor(), 60 * done as i64);
    conformance::assert_ledger_consistent(store, shop).await;
    let mut total = shop_account.balance.minor();
    for (i, id) in senders.iter().enumerate() {
        let balance = store.account(*id).await.unwrap().unwrap().balance.minor();
        assert_eq!(
            balance,
            if i % 5 == 0 { OPENING } else { OPENING - 60 },
            "sender {i}"
        );
        total += balance;
    }
    assert_eq!(
        total,
        OPENING * SENDERS as i64,
        "money was created or destroyed"
    );
    // Only the key raced by sender 1 can meet a deadlock: a batch claims keys after its account
    // locks, a transfer sent alone before them (migration 9 says why); it is retried alone.
    assert!(
        pg.serialization_failures() <= 1,
        "{} serialization failures or deadlocks",
        pg.serialization_failures()
    );
}

/// Runs the transfers all at once, each in a task of its own.
async fn futures_join(
    store: &Arc<dyn Store>,
    commands: Vec<TransferCommand>,
) -> Vec<Result<Applied, StoreError>> {
    let tasks: Vec<_> = commands
        .into_iter()
        .map(|t| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.transfer(&t).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// A batch whose credits cross the balance ceiling part-way: the recipient has room for ten
/// transfers, forty arrive at once. Ten apply, every later one is refused alone with the
/// balance-limit error (migration 10 keeps the running balance it checks), and neither the
/// recipient's ledger nor a refused sender shows a trace of the refused ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_reaches_the_balance_ceiling_refuses_exactly_the_transfers_past_it() {
    let hot = HotRecipient::new().await;
    let (store, shop) = (&hot.store, hot.shop);
    const FIT: i64 = 10;
    let start = Money::MAX_BALANCE.minor() - FIT * 60 - 30;
    conformance::deposit(store, shop, start).await;
    let commands = hot.senders.iter().map(|s| to_shop(*s, 60, None)).collect();
    let results = futures_join(store, commands).await;

    let (mut done, mut refused) = (0, 0);
    for result in &results {
        match result {
            Ok(Applied::Done(op)) => {
                assert_eq!(op.balance_after.minor(), 40, "the sender's balance after");
                done += 1;
            }
            Err(StoreError::BalanceLimitExceeded) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((done, refused), (FIT, SENDERS as i64 - FIT));
    assert!(
        hot.pg.batched_transfers() > 0,
        "transfers queued behind one in flight were applied together"
    );
    let account = store.account(shop).await.unwrap().unwrap();
    assert_eq!(
        (account.balance.minor(), account.version),
        (Money::MAX_BALANCE.minor() - 30, 1 + FIT as u64)
    );
    conformance::assert_ledger_consistent(store, shop).await;
    let mut total = account.balance.minor() - start;
    for id in &hot.senders {
        let sender = store.account(*id).await.unwrap().unwrap();
        assert!(
            matches!(
                (sender.balance.minor(), sender.version),
                (40, 2) | (OPENING, 1)
            ),
            "a sender is either debited once or untouched: {sender:?}"
        );
        total += sender.balance.minor();
    }
    assert_eq!(
        total,
        OPENING * SENDERS as i64,
        "money was created or destroyed"
    );
}
