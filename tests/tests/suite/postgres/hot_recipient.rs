//! Many senders paying one recipient: the batched transfers of migrations 9 and 10, and a
//! hot recipient's credits refused by the database.

use std::sync::Arc;

use lighttech::domain::{Money, Timestamp, UserId};
use lighttech::store::postgres::PgStore;
use lighttech::store::{Applied, SessionUse, Store, StoreError, TransferCommand};
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
    db: PgDatabase,
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
            db,
        }
    }

    /// A connection of the test's own, outside the store's pool.
    async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    /// A connection in a transaction holding shop's account row; `COMMIT` on it lets go.
    async fn hold_shop_account(&self) -> tokio_postgres::Client {
        let holder = self.connect().await;
        holder.batch_execute("BEGIN").await.unwrap();
        holder
            .execute(
                "SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE",
                &[&self.shop.0],
            )
            .await
            .unwrap();
        holder
    }

    /// Starts `count` transfers of 60 into `shop`, one per sender, while the test holds shop's
    /// account row: the first [two](IN_FLIGHT_PER_RECIPIENT) wait for the row inside
    /// PostgreSQL, the rest queue in the store and go to the database as one batch.
    async fn queue_behind_a_held_row(
        &self,
        count: usize,
        key: Option<&str>,
    ) -> (
        tokio_postgres::Client,
        Vec<tokio::task::JoinHandle<Result<Applied, StoreError>>>,
    ) {
        let monitor = self.connect().await;
        let holder = self.hold_shop_account().await;
        let tasks = self.senders[..count]
            .iter()
            .enumerate()
            .map(|(i, from)| {
                let store = Arc::clone(&self.store);
                let key = key.map(|k| format!("{k}-{i}"));
                let command = to_shop(*from, 60, key.as_deref());
                tokio::spawn(async move { store.transfer(&command).await })
            })
            .collect();
        super::eventually("two transfers wait for shop's account row", async || {
            super::lock_waiters(&monitor).await == IN_FLIGHT_PER_RECIPIENT
        })
        .await;
        // Let the rest reach the store's queue.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        (holder, tasks)
    }

    /// Shop's balance in minor units.
    async fn shop_balance(&self) -> i64 {
        let account = self.store.account(self.shop).await.unwrap().unwrap();
        account.balance.minor()
    }

    /// Checks that every sender is debited once (60) or untouched and that no money was created
    /// or destroyed; returns how many were debited.
    async fn assert_conserved(&self) -> i64 {
        let (mut total, mut debited) = (self.shop_balance().await, 0);
        for id in &self.senders {
            let balance = self
                .store
                .account(*id)
                .await
                .unwrap()
                .unwrap()
                .balance
                .minor();
            assert!(
                balance == OPENING || balance == OPENING - 60,
                "a sender is debited once or not at all: {balance}"
            );
            debited += i64::from(balance != OPENING);
            total += balance;
        }
        assert_eq!(
            total,
            OPENING * SENDERS as i64,
            "money was created or destroyed"
        );
        conformance::assert_ledger_consistent(&self.store, self.shop).await;
        debited
    }
}

/// A hot recipient's credits refused by PostgreSQL: a trigger fails every update that raises an
/// account's balance with a serialization failure (40001), which the store retries and then
/// gives up on. [`ALLOW_CREDITS`] ends it.
const REFUSE_CREDITS: &str = "CREATE FUNCTION lt_injected_conflict() RETURNS trigger \
     LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END $$; \
     CREATE TRIGGER lt_injected_conflict BEFORE UPDATE ON accounts FOR EACH ROW \
     WHEN (NEW.balance > OLD.balance) EXECUTE FUNCTION lt_injected_conflict();";
const ALLOW_CREDITS: &str = "DROP TRIGGER lt_injected_conflict ON accounts";

/// The store's slots in flight per recipient (`IN_FLIGHT` in `store/postgres/batch.rs`).
const IN_FLIGHT_PER_RECIPIENT: i64 = 2;

/// A transfer to `shop`; with `key`, idempotent under it.
fn to_shop(from: UserId, amount: i64, key: Option<&str>) -> TransferCommand {
    let mut command = conformance::transfer(from, "shop", amount);
    let later = Timestamp::now().plus_seconds(3600);
    command.idempotency = key.map(|k| conformance::stamp(k, &format!("shop {amount}"), later));
    command
}

/// A hot recipient's credits refused by PostgreSQL ([`REFUSE_CREDITS`]): 503, and the retry
/// applies once.
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
        admin.batch_execute(REFUSE_CREDITS).await.unwrap();
    };
    let allow = async {
        admin.batch_execute(ALLOW_CREDITS).await.unwrap();
    };
    lighttech_tests::hot::a_refused_transfer_into_a_hot_account_is_503_and_its_retry_applies_once(
        &t, &t, refuse, allow,
    )
    .await;
}

/// The same refusal on the batched path: transfers queued behind two in flight go to the
/// database as one batch, whose credit to shop fails with a serialization failure; each is
/// retried alone, refused in the end, and answered `Unavailable` with nothing applied. Sent
/// again with the same keys once the conflicts are over, each applies exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_batch_is_unavailable_for_each_transfer_and_each_retry_applies_once() {
    let hot = HotRecipient::new().await;
    const COUNT: usize = 10;
    let admin = hot.connect().await;
    admin.batch_execute(REFUSE_CREDITS).await.unwrap();
    let (holder, tasks) = hot.queue_behind_a_held_row(COUNT, Some("tip")).await;
    holder.batch_execute("COMMIT").await.unwrap();
    for task in tasks {
        let result = task.await.unwrap();
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "a refused credit is Unavailable: {result:?}"
        );
    }
    assert!(
        hot.pg.batched_transfers() > 0,
        "the queued transfers went to the database as a batch"
    );
    assert_eq!(hot.shop_balance().await, 0, "nothing was applied");
    assert_eq!(hot.assert_conserved().await, 0, "no sender was debited");

    admin.batch_execute(ALLOW_CREDITS).await.unwrap();
    for round in 0..2 {
        for (i, from) in hot.senders[..COUNT].iter().enumerate() {
            let key = format!("tip-{i}");
            let result = hot.store.transfer(&to_shop(*from, 60, Some(&key))).await;
            match (round, result) {
                (0, Ok(Applied::Done(_))) | (1, Ok(Applied::AlreadyRecorded(_))) => {}
                (_, other) => panic!("round {round}, sender {i}: {other:?}"),
            }
        }
    }
    assert_eq!(hot.shop_balance().await, 60 * COUNT as i64);
    assert_eq!(hot.assert_conserved().await, COUNT as i64);
}

/// A deactivation racing a batch, step by step. Two transfers into shop hold its slots while
/// the test holds shop's account row; ten more, each under its sender's session, queue in the
/// store. The test also holds those sessions, then lets the two through: the ten go to the
/// database as one batch, which reads shop's user row and stops at the sessions. Now shop is
/// deactivated. The batch took shop's user row under a share lock (migration 10), so the
/// deactivation waits for it and its credits commit first; read without the lock, the
/// deactivation commits at once and the batch, let go, credits shop after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_never_credits_a_recipient_whose_deactivation_committed_first() {
    let hot = HotRecipient::new().await;
    const QUEUED: usize = 10;
    let root = conformance::create_user(&hot.store, "root").await;
    let shop = hot.store.user_by_id(hot.shop).await.unwrap().unwrap();
    let monitor = hot.connect().await;
    let transfer = |command: TransferCommand| {
        let store = Arc::clone(&hot.store);
        tokio::spawn(async move { store.transfer(&command).await })
    };

    let account_holder = hot.hold_shop_account().await;
    let mut tasks: Vec<_> = hot.senders[..2]
        .iter()
        .map(|from| transfer(to_shop(*from, 60, None)))
        .collect();
    super::eventually("two transfers wait for shop's account row", async || {
        super::lock_waiters(&monitor).await == 2
    })
    .await;

    let mut sessions = Vec::new();
    for from in &hot.senders[2..2 + QUEUED] {
        let session = conformance::session(*from, Timestamp::now());
        assert!(hot.store.create_session(&session).await.unwrap());
        sessions.push(session.id);
    }
    let session_holder = hot.connect().await;
    session_holder.batch_execute("BEGIN").await.unwrap();
    let ids: Vec<uuid::Uuid> = sessions.iter().map(|s| s.0).collect();
    session_holder
        .execute(
            "SELECT 1 FROM sessions WHERE id = ANY($1) FOR UPDATE",
            &[&ids],
        )
        .await
        .unwrap();
    for (from, session) in hot.senders[2..2 + QUEUED].iter().zip(&sessions) {
        let mut command = to_shop(*from, 60, None);
        command.session = Some(SessionUse {
            id: *session,
            touch_before: Timestamp::now(),
        });
        tasks.push(transfer(command));
    }
    // Let the ten reach the store's queue behind the two.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    account_holder.batch_execute("COMMIT").await.unwrap();
    // The two held transfers commit in turn (the second waits for the first's row lock); then
    // the only statement left waiting is the batch's, on the held sessions.
    super::eventually(
        "the two commit and the batch waits for the sessions",
        async || {
            tasks[..2].iter().all(|t| t.is_finished()) && super::lock_waiters(&monitor).await == 1
        },
    )
    .await;
    assert!(
        hot.pg.batched_transfers() >= QUEUED as u64,
        "the ten went as one batch"
    );

    let deactivation = tokio::spawn({
        let store = Arc::clone(&hot.store);
        let change = super::status_change(&root, &shop, false);
        async move { store.set_user_active(&change).await }
    });
    super::eventually(
        "the deactivation commits or waits for the batch",
        async || deactivation.is_finished() || super::lock_waiters(&monitor).await == 2,
    )
    .await;
    // Every credit that may ever land has committed once the deactivation has.
    let at_deactivation = if deactivation.is_finished() {
        let balance = hot.shop_balance().await;
        session_holder.batch_execute("COMMIT").await.unwrap();
        balance
    } else {
        session_holder.batch_execute("COMMIT").await.unwrap();
        while !deactivation.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        hot.shop_balance().await
    };
    let deactivated = deactivation.await.unwrap().unwrap().unwrap();
    assert!(!deactivated.is_active);

    let (mut done, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(Applied::Done(_)) => done += 1,
            Err(StoreError::RecipientNotFound) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(done + refused, 2 + QUEUED as i64);
    assert_eq!(
        hot.shop_balance().await,
        at_deactivation,
        "shop was credited after its deactivation committed"
    );
    assert_eq!(at_deactivation, 60 * done);
    assert_eq!(hot.assert_conserved().await, done);
    // From now on, shop is no recipient at all.
    let late = hot
        .store
        .transfer(&to_shop(hot.senders[SENDERS - 1], 60, None))
        .await;
    assert!(
        matches!(late, Err(StoreError::RecipientNotFound)),
        "{late:?}"
    );
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
