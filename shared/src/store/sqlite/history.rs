//! The history read.

use super::*;

/// One page of `q`'s history, newest first: the user's entries below the cursor, read newest
/// first and filtered here, until the page is full or [`HISTORY_SCAN_ROWS`] entries were looked
/// at.
pub(super) fn history_page(c: &Connection, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
    if q.below_everything() {
        return Ok(HistoryPage::from_fetched(vec![], q.limit));
    }
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations o \
                 WHERE o.user_id = ?1 AND o.seq < ?2 ORDER BY o.seq DESC LIMIT ?3"
        ))
        .map_err(map_err)?;
    let mut rows = stmt
        .query(params![
            q.user.to_string(),
            q.before_seq
                .map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            // One more than the bound: whether anything lies beyond it.
            HISTORY_SCAN_ROWS as i64 + 1,
        ])
        .map_err(map_err)?;
    let wanted = q.limit as usize + 1;
    let mut ops: Vec<Operation> = Vec::with_capacity(wanted.min(HISTORY_SCAN_ROWS));
    let mut looked_at = 0;
    let mut last_seq = 0;
    while let Some(row) = rows.next().map_err(map_err)? {
        if looked_at == HISTORY_SCAN_ROWS {
            // More lies beyond the bound: this page ends below the last entry looked at.
            return Ok(HistoryPage::cut_short(ops, last_seq));
        }
        looked_at += 1;
        // The filter's columns first: decoding a whole operation costs more than twice as much,
        // and a page that matches rarely passes over up to the bound.
        let seq: i64 = row.get(OPERATION_SEQ).map_err(map_err)?;
        last_seq = version_of(seq).map_err(map_err)?;
        let kind = row
            .get_ref(OPERATION_KIND)
            .ok()
            .and_then(|k| k.as_str().ok())
            .and_then(OperationKind::parse)
            .ok_or_else(|| map_err(bad_row("kind")))?;
        let at = Timestamp::from_millis(row.get(OPERATION_CREATED_AT).map_err(map_err)?);
        if q.admits(kind, at) {
            ops.push(operation_from_row(row).map_err(map_err)?);
            if ops.len() == wanted {
                break;
            }
        }
    }
    Ok(HistoryPage::from_fetched(ops, q.limit))
}
