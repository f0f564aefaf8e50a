//! History: pages newest first resuming below their cursor, filters that keep pages full, and
//! cursors that lead nowhere reading as empty pages.

use std::sync::Arc;

use lighttech::domain::{ChangeKind, OperationKind, Timestamp};
use lighttech::store::{HistoryQuery, Store};

use super::{all_history, change, create, deposit, transfer};

pub async fn history_pages_newest_first_and_resumes_below_the_cursor(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    for i in 1..=25 {
        deposit(&store, alice.id, i).await;
    }
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store
            .history(&HistoryQuery {
                user: alice.id,
                limit: 10,
                before_seq: before,
                kinds: vec![],
                since: None,
                until: None,
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.operations.len() <= 10);
        seen.extend(page.operations.iter().map(|o| o.seq));
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1..=25).rev().collect::<Vec<u64>>());
    // Exactly a page's worth: no empty trailing page.
    let page = store
        .history(&HistoryQuery {
            user: alice.id,
            limit: 25,
            before_seq: None,
            kinds: vec![],
            since: None,
            until: None,
        })
        .await
        .unwrap();
    assert_eq!(page.operations.len(), 25);
    assert_eq!(page.next_before, None);
}

pub async fn history_filters_keep_pages_full(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    let _bob = create(&store, "bob").await;
    let start = Timestamp::now();
    for _ in 0..12 {
        deposit(&store, alice.id, 100).await;
        store
            .apply_change(&change(alice.id, ChangeKind::Withdrawal, 10))
            .await
            .unwrap();
        store.transfer(&transfer(alice.id, "bob", 1)).await.unwrap();
    }
    let query = |kinds: Vec<OperationKind>, before: Option<u64>| HistoryQuery {
        user: alice.id,
        limit: 5,
        before_seq: before,
        kinds,
        since: None,
        until: None,
    };
    let mut withdrawals = 0;
    let mut before = None;
    loop {
        let page = store
            .history(&query(vec![OperationKind::Withdrawal], before))
            .await
            .unwrap();
        assert!(
            page.operations
                .iter()
                .all(|o| o.kind == OperationKind::Withdrawal)
        );
        if page.next_before.is_some() {
            assert_eq!(page.operations.len(), 5, "a page with more to come is full");
        }
        withdrawals += page.operations.len();
        match page.next_before {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(withdrawals, 12);
    let two_kinds = store
        .history(&query(
            vec![OperationKind::Deposit, OperationKind::TransferOut],
            None,
        ))
        .await
        .unwrap();
    assert_eq!(two_kinds.operations.len(), 5);
    assert!(
        two_kinds
            .operations
            .iter()
            .all(|o| matches!(o.kind, OperationKind::Deposit | OperationKind::TransferOut))
    );
    // Time bounds are inclusive.
    let all = all_history(&store, alice.id).await;
    let pivot = all[10].created_at;
    let since = store
        .history(&HistoryQuery {
            user: alice.id,
            limit: 100,
            before_seq: None,
            kinds: vec![],
            since: Some(pivot),
            until: None,
        })
        .await
        .unwrap();
    assert!(since.operations.iter().all(|o| o.created_at >= pivot));
    assert!(since.operations.iter().any(|o| o.id == all[10].id));
    let until = store
        .history(&HistoryQuery {
            user: alice.id,
            limit: 100,
            before_seq: None,
            kinds: vec![],
            since: Some(start.plus_seconds(-1)),
            until: Some(pivot),
        })
        .await
        .unwrap();
    assert!(until.operations.iter().all(|o| o.created_at <= pivot));
    assert!(until.operations.iter().any(|o| o.id == all[10].id));
    let none = store
        .history(&HistoryQuery {
            user: alice.id,
            limit: 100,
            before_seq: None,
            kinds: vec![],
            since: Some(Timestamp::now().plus_seconds(3600)),
            until: None,
        })
        .await
        .unwrap();
    assert!(none.operations.is_empty() && none.next_before.is_none());
}

/// No cursor leads to an empty range: a page that reaches the first operation has none, and a
/// position at or below it (a validly signed cursor can carry any number) reads as an empty
/// page without a cursor, whatever the filters — never as a store failure.
pub async fn history_ends_where_nothing_lies_below(store: Arc<dyn Store>) {
    let alice = create(&store, "alice").await;
    for i in 1..=3 {
        deposit(&store, alice.id, i).await;
    }
    let query = |limit, before_seq, kinds: Vec<OperationKind>, until| HistoryQuery {
        user: alice.id,
        limit,
        before_seq,
        kinds,
        since: None,
        until,
    };
    let later = Some(Timestamp::now().plus_seconds(3600));
    for before in [0, 1] {
        for kinds in [
            vec![],
            vec![OperationKind::Deposit],
            vec![OperationKind::TransferIn],
        ] {
            for until in [None, later] {
                let page = store
                    .history(&query(20, Some(before), kinds.clone(), until))
                    .await
                    .unwrap_or_else(|e| panic!("below {before}, {kinds:?}, {until:?}: {e:?}"));
                assert!(page.operations.is_empty(), "below {before}: {page:?}");
                assert_eq!(page.next_before, None, "below {before}, {kinds:?}");
            }
        }
    }
    // Paged down to the first operation: the page holding it has no cursor.
    let page = store.history(&query(2, None, vec![], None)).await.unwrap();
    assert_eq!(page.next_before, Some(2));
    let page = store
        .history(&query(2, Some(2), vec![], None))
        .await
        .unwrap();
    let seqs: Vec<u64> = page.operations.iter().map(|o| o.seq).collect();
    assert_eq!((seqs, page.next_before), (vec![1], None));
    // A filter nothing matches: one empty page, no cursor.
    let page = store
        .history(&query(2, None, vec![OperationKind::TransferIn], None))
        .await
        .unwrap();
    assert!(page.operations.is_empty() && page.next_before.is_none());
}
