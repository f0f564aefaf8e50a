//! The history read: pages of a user's operations, newest first, filtered by DynamoDB.

use super::*;

impl DynamoStore {
    pub(super) async fn history_page(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        use std::sync::atomic::Ordering;
        let empty = HistoryPage {
            operations: vec![],
            next_before: None,
        };
        if q.below_everything() {
            return Ok(empty);
        }
        let mut top = q.before_seq.map(|before| before - 1);
        if let Some(until) = q.until {
            // The sort key is the sequence, not the time; but `created_at` never decreases with
            // it, so the newest operation at or before `until` is found by bisection and the
            // query starts there instead of filtering out everything newer.
            match self.last_seq_until(q.user, until, top).await? {
                Some(seq) => top = Some(seq),
                None => return Ok(empty),
            }
        }
        let Some((lo, hi)) = op_range(top) else {
            return Ok(empty);
        };
        let mut filters = Vec::new();
        let mut values: Item = HashMap::from([
            (":pk".into(), s(user_pk(q.user))),
            (":lo".into(), s(lo)),
            (":hi".into(), s(hi)),
        ]);
        let mut names = HashMap::new();
        if !q.kinds.is_empty() && q.kinds.len() < OperationKind::ALL.len() {
            let placeholders: Vec<String> = q
                .kinds
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    values.insert(format!(":k{i}"), s(k.as_str()));
                    format!(":k{i}")
                })
                .collect();
            names.insert("#kind".to_owned(), "kind".to_owned());
            filters.push(format!("#kind IN ({})", placeholders.join(", ")));
        }
        if let Some(until) = q.until {
            // Kept although the bisection already placed the start: it costs no read.
            values.insert(":until".into(), n(until.millis()));
            filters.push("created_at <= :until".into());
        }
        let filtered = !filters.is_empty();
        let mut filter = filters.join(" AND ");
        if let Some(since) = q.since {
            // Reading newest first, the first operation older than `since` ends the history:
            // the filter lets it through so that the loop sees it and stops.
            if filtered {
                values.insert(":since".into(), n(since.millis()));
                filter = format!("({filter}) OR created_at < :since");
            }
        }
        let wanted = q.limit as usize + 1;
        // Unfiltered, a page is exactly one round trip; filtered, read in larger steps.
        let step = if filtered {
            (wanted as i32).max(100)
        } else {
            wanted as i32
        };
        let mut collected: Vec<Operation> = Vec::with_capacity(wanted);
        let mut start: Option<Item> = None;
        let mut last_evaluated: Option<u64> = None;
        let mut exhausted = false;
        for _ in 0..MAX_HISTORY_QUERIES {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND SK BETWEEN :lo AND :hi")
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(step)
                .set_exclusive_start_key(start.take());
            if filtered {
                query = query.filter_expression(filter.clone());
            }
            if !names.is_empty() {
                query = query.set_expression_attribute_names(Some(names.clone()));
            }
            self.stats.history_reads.fetch_add(1, Ordering::Relaxed);
            let out = query.send().await.map_err(sdk_error)?;
            for item in out.items() {
                let op = operation_from_item(item)?;
                if q.since.is_some_and(|since| op.created_at < since) {
                    exhausted = true;
                    break;
                }
                collected.push(op);
                if collected.len() == wanted {
                    break;
                }
            }
            last_evaluated = match out.last_evaluated_key() {
                Some(k) => {
                    start = Some(k.clone());
                    let sk = get_s(k, "SK")?;
                    Some(
                        sk.strip_prefix("OP#")
                            .and_then(|d| d.parse().ok())
                            .ok_or_else(|| bad("SK"))?,
                    )
                }
                None => None,
            };
            if exhausted || collected.len() >= wanted || last_evaluated.is_none() {
                break;
            }
        }
        Ok(match last_evaluated {
            // A filtered scan that ran out of round trips: resume where it stopped. DynamoDB
            // names the last item a query evaluated whenever it hit its `Limit`, also when that
            // is the first operation and nothing lies below.
            Some(last) if collected.len() < wanted && !exhausted => {
                HistoryPage::cut_short(collected, last)
            }
            _ => HistoryPage::from_fetched(collected, q.limit),
        })
    }
}
