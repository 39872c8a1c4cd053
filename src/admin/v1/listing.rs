//! The list endpoints' query, as Unikraft's platform API and its SDKs send it: `?uuid=` and
//! `?name=` filters (repeatable; an item matching either is listed), `count` and `from` for
//! pages, `order` and `sortby`, and `details`.
//!
//! Pages are in creation order (`sortby=create_time`, the only key the platform names), oldest
//! first unless `order=desc`; `from` is a UUID and the page starts *with* that item (the SDKs
//! drop the repeated item). A `from` that is not in the listing gives an empty page, which the
//! SDKs take as "that item is gone" and resume from an earlier one.

use uuid::Uuid;

use super::wire;
use crate::controller::api::{ApiError, Ref};

/// The most items one page holds (without `count`, a listing is not paged).
pub const MAX_COUNT: usize = 1000;

/// A checked list query.
#[derive(Debug, Default)]
pub struct ListQuery {
    /// `uuid` and `name` filters, in the order given.
    pub refs: Vec<Ref>,
    /// Page size; `None`: everything from `from` on.
    pub count: Option<usize>,
    /// The first item of the page.
    pub from: Option<Uuid>,
    /// Newest first.
    pub desc: bool,
}

/// Parses the query string of a list request, naming the parameter at fault.
pub fn parse(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery::default();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let value = value.trim();
        match &*key {
            "uuid" => {
                let id = Uuid::parse_str(value).map_err(|_| {
                    wire::bad("uuid", format!("invalid UUID {:?}", wire::clip(value)))
                })?;
                q.refs.push(Ref::Id(id));
            }
            "name" if value.is_empty() => return Err(wire::bad("name", "empty name")),
            "name" => q.refs.push(Ref::Name(value.to_owned())),
            "count" => {
                let n: usize = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        wire::bad(
                            "count",
                            format!(
                                "{:?} is not a page size from 1 to {MAX_COUNT}",
                                wire::clip(value)
                            ),
                        )
                    })?;
                q.count = Some(n);
            }
            "from" => {
                let id = Uuid::parse_str(value).map_err(|_| {
                    wire::bad(
                        "from",
                        format!(
                            "{:?} is not a UUID (the first item of the page)",
                            wire::clip(value)
                        ),
                    )
                })?;
                q.from = Some(id);
            }
            "order" => {
                q.desc = match value {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(wire::bad(
                            "order",
                            format!("{:?} is not asc or desc", wire::clip(value)),
                        ));
                    }
                }
            }
            "sortby" if value == "create_time" => {}
            "sortby" => {
                return Err(wire::bad(
                    "sortby",
                    format!(
                        "{:?} is not a sort key; the only one is create_time",
                        wire::clip(value)
                    ),
                ));
            }
            // Every item is shown in full either way.
            "details" if matches!(value, "true" | "false" | "1" | "0") => {}
            "details" => return Err(wire::bad("details", "expected true or false")),
            "tags" => {
                return Err(wire::bad(
                    "tags",
                    "not supported: autokill resources carry no tags",
                ));
            }
            other => {
                return Err(wire::bad(
                    &wire::clip(other),
                    "unknown query parameter; expected uuid, name, count, from, order, \
                     sortby or details",
                ));
            }
        }
    }
    Ok(q)
}

/// One listed resource: what it is sorted and filtered by.
pub struct Entry<'a, T> {
    /// Identity.
    pub id: Uuid,
    /// Name.
    pub name: &'a str,
    /// Creation time, the sort key.
    pub created_at: std::time::SystemTime,
    /// The resource.
    pub item: T,
}

/// What a query selects from `entries`: the page, in order, and the filter references that
/// matched nothing (answered as not-found items).
pub fn select<T>(mut entries: Vec<Entry<'_, T>>, q: &ListQuery) -> (Vec<T>, Vec<Ref>) {
    let mut misses = Vec::new();
    if !q.refs.is_empty() {
        let ids: std::collections::HashSet<Uuid> = q
            .refs
            .iter()
            .filter_map(|r| match r {
                Ref::Id(id) => Some(*id),
                Ref::Name(_) => None,
            })
            .collect();
        let names: std::collections::HashSet<&str> = q
            .refs
            .iter()
            .filter_map(|r| match r {
                Ref::Name(n) => Some(n.as_str()),
                Ref::Id(_) => None,
            })
            .collect();
        let found_ids: std::collections::HashSet<Uuid> = entries.iter().map(|e| e.id).collect();
        let found_names: std::collections::HashSet<&str> = entries.iter().map(|e| e.name).collect();
        misses = q
            .refs
            .iter()
            .filter(|r| match r {
                Ref::Id(id) => !found_ids.contains(id),
                Ref::Name(n) => !found_names.contains(n.as_str()),
            })
            .cloned()
            .collect();
        entries.retain(|e| ids.contains(&e.id) || names.contains(e.name));
    }
    entries.sort_by_key(|e| (e.created_at, e.id));
    if q.desc {
        entries.reverse();
    }
    let start = match q.from {
        None => 0,
        Some(from) => match entries.iter().position(|e| e.id == from) {
            Some(at) => at,
            None => entries.len(),
        },
    };
    let page = entries
        .into_iter()
        .skip(start)
        .take(q.count.unwrap_or(usize::MAX))
        .map(|e| e.item)
        .collect();
    (page, misses)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn entries() -> Vec<Entry<'static, &'static str>> {
        ["c", "a", "b"]
            .iter()
            .enumerate()
            .map(|(i, name)| Entry {
                id: Uuid::from_u128(i as u128 + 1),
                name,
                // Created in the order c, a, b.
                created_at: UNIX_EPOCH + Duration::from_secs(i as u64),
                item: *name,
            })
            .collect()
    }

    #[test]
    fn pages_in_creation_order_from_an_inclusive_cursor() {
        let q = parse(Some("count=2")).expect("query");
        assert_eq!(select(entries(), &q).0, ["c", "a"]);
        let q = parse(Some(&format!("count=2&from={}", Uuid::from_u128(2)))).expect("query");
        assert_eq!(select(entries(), &q).0, ["a", "b"]);
        let q = parse(Some("order=desc")).expect("query");
        assert_eq!(select(entries(), &q).0, ["b", "a", "c"]);
        let q = parse(Some(&format!("from={}", Uuid::from_u128(9)))).expect("query");
        assert!(select(entries(), &q).0.is_empty(), "a cursor that is gone");
    }

    #[test]
    fn filters_are_a_union_and_report_misses() {
        let q = parse(Some(&format!("name=b&uuid={}&name=zz", Uuid::from_u128(1)))).expect("query");
        let (page, misses) = select(entries(), &q);
        assert_eq!(page, ["c", "b"]);
        assert_eq!(misses, [Ref::Name("zz".into())]);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (query, field) in [
            ("uuid=web", "uuid: "),
            ("count=0", "count: "),
            ("count=x", "count: "),
            ("from=web", "from: "),
            ("order=up", "order: "),
            ("sortby=name", "sortby: "),
            ("tags=a", "tags: not supported"),
            ("colour=red", "colour: unknown query parameter"),
        ] {
            let err = parse(Some(query)).expect_err(query);
            assert!(err.message.starts_with(field), "{query}: {}", err.message);
        }
        assert!(parse(Some("details=true&sortby=create_time&order=asc")).is_ok());
    }
}
