//! Grouping many items into a bounded number of layers, so that small changes move few items.

use sha2::{Digest as _, Sha256};

/// One thing to place in a layer: a stable key (a package name, say) and its size.
#[derive(Debug, Clone)]
pub struct PlanItem {
    /// A name that stays the same across versions of the item.
    pub key: String,
    /// Its size in bytes; larger items get layers of their own first.
    pub size: u64,
}

/// Groups `items` (given in install order) into at most `budget` layers and returns, for each layer, the
/// indices of its items in install order; layers come in the order of their first item.
///
/// With `items.len() <= budget` every item gets its own layer. Otherwise a third of the budget (at least
/// one) is kept for shared buckets and the rest goes to the largest items, one layer each (ties by key).
/// Every other item lands in the bucket chosen by a hash of its key. So adding, removing or changing the
/// version of one small item changes one bucket only, and every other layer keeps its bytes.
pub fn plan_layers(items: &[PlanItem], budget: usize) -> Vec<Vec<usize>> {
    let budget = budget.max(1);
    if items.len() <= budget {
        return (0..items.len()).map(|i| vec![i]).collect();
    }
    let buckets = budget.div_ceil(3).max(1);
    let singles = budget - buckets;
    let mut by_size: Vec<usize> = (0..items.len()).collect();
    by_size.sort_by(|&a, &b| items[b].size.cmp(&items[a].size).then_with(|| items[a].key.cmp(&items[b].key)));
    let mut single = vec![false; items.len()];
    for &i in by_size.iter().take(singles) {
        single[i] = true;
    }
    place(items, buckets, |i, _| single[i])
}

/// Each item alone when `alone(index, item)`, else in the bucket its key hashes to; layers in the order
/// of their first item.
fn place(items: &[PlanItem], buckets: usize, alone: impl Fn(usize, &PlanItem) -> bool) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut bucket_of: Vec<Option<usize>> = vec![None; buckets];
    for (i, item) in items.iter().enumerate() {
        if alone(i, item) {
            groups.push(vec![i]);
            continue;
        }
        let b = bucket(&item.key, buckets);
        match bucket_of[b] {
            Some(g) => groups[g].push(i),
            None => {
                bucket_of[b] = Some(groups.len());
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// Items smaller than `below` bytes share `buckets` layers, chosen by a hash of their key; larger ones
/// get a layer each. Returns the layers as [`plan_layers`] does, or `None` when that would exceed
/// `budget` (the caller then falls back to [`plan_layers`]).
///
/// Each layer then costs a pull its fixed price (containerd applies layers one at a time, ~50 ms each),
/// and small packages share it. As with the budget's buckets, adding, removing or upgrading a small item
/// changes its bucket only; an item that grows past `below` moves to a layer of its own.
pub fn plan_buckets(items: &[PlanItem], below: u64, buckets: usize, budget: usize) -> Option<Vec<Vec<usize>>> {
    let groups = place(items, buckets.max(1), |_, item| item.size >= below);
    (groups.len() <= budget.max(1)).then_some(groups)
}

fn bucket(key: &str, buckets: usize) -> usize {
    let h = Sha256::digest(key.as_bytes());
    (u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8])) % buckets as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<PlanItem> {
        (0..n).map(|i| PlanItem { key: format!("pkg{i}"), size: (i as u64 * 7919) % 1000 }).collect()
    }

    #[test]
    fn under_budget_is_one_each() {
        assert_eq!(plan_layers(&items(3), 5), vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn over_budget_respects_budget_and_covers_all() {
        for budget in 1..20 {
            let it = items(40);
            let plan = plan_layers(&it, budget);
            assert!(plan.len() <= budget, "budget {budget}: {} layers", plan.len());
            let mut all: Vec<usize> = plan.iter().flatten().copied().collect();
            all.sort();
            assert_eq!(all, (0..40).collect::<Vec<_>>());
        }
    }

    #[test]
    fn adding_a_small_item_changes_one_layer_only() {
        let mut it = items(40);
        let before = plan_layers(&it, 12);
        let keys = |p: &Vec<Vec<usize>>, it: &[PlanItem]| -> Vec<Vec<String>> {
            p.iter().map(|g| g.iter().map(|&i| it[i].key.clone()).collect()).collect()
        };
        let kb = keys(&before, &it);
        it.push(PlanItem { key: "newcomer".into(), size: 1 });
        let after = plan_layers(&it, 12);
        let ka = keys(&after, &it);
        let changed = ka.iter().filter(|g| !kb.contains(g)).count();
        assert_eq!(changed, 1, "before {kb:?}\nafter {ka:?}");
    }

    #[test]
    fn small_items_share_buckets_large_ones_stay_alone() {
        let it: Vec<PlanItem> = (0..20).map(|i| PlanItem { key: format!("pkg{i}"), size: if i % 5 == 0 { 5_000_000 } else { 1000 } }).collect();
        let plan = plan_buckets(&it, 1_000_000, 3, 100).expect("within budget");
        assert!(plan.len() <= 4 + 3, "{plan:?}");
        for g in &plan {
            if g.iter().any(|&i| it[i].size >= 1_000_000) {
                assert_eq!(g.len(), 1, "a large item is alone: {g:?}");
            }
        }
        let mut all: Vec<usize> = plan.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        // Layers come in the order of their first item, and each keeps install order.
        let firsts: Vec<usize> = plan.iter().map(|g| g[0]).collect();
        assert!(firsts.windows(2).all(|w| w[0] < w[1]) && plan.iter().all(|g| g.windows(2).all(|w| w[0] < w[1])));
        // Upgrading a small item (same key, other size) or adding one touches its bucket only.
        let mut more = it.clone();
        more.push(PlanItem { key: "newcomer".into(), size: 10 });
        let after = plan_buckets(&more, 1_000_000, 3, 100).expect("within budget");
        let changed = after.iter().filter(|g| !plan.contains(g)).count();
        assert_eq!(changed, 1, "before {plan:?}\nafter {after:?}");
        // Over budget: no plan.
        assert!(plan_buckets(&it, 1_000_000, 3, 6).is_none());
    }
}
