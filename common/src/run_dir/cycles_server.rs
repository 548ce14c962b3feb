//! `cycles.csv`'s columns for the server's own account of a level ([`ServerAccount`]): token
//! agreement, the mean timing breakdown, model loads, cached prompt tokens. All empty when the
//! server said nothing about its work (or the run predates them). Then the run matrix's
//! columns ([`GROUP`]): which group, setting and instance count a row belongs to.

use super::csv_file::num;
use super::cycles::{Column, count, fixed, whole};
use crate::stats::{CycleSummary, ServerAccount};

fn acct(s: &mut CycleSummary) -> &mut ServerAccount {
    s.server_account.get_or_insert_with(ServerAccount::default)
}

/// Writes `f` of the account, empty when there is none.
fn cell(s: &CycleSummary, f: impl Fn(&ServerAccount) -> String) -> String {
    s.server_account.as_ref().map(f).unwrap_or_default()
}

/// The columns after the self-check, in file order.
pub(super) const SERVER_ACCOUNT: &[Column] = &[
    Column {
        name: "server_token_checked",
        write: |s| cell(s, |a| a.token_checked.to_string()),
        read: |s, v| acct(s).token_checked = count(v).unwrap_or(0),
    },
    Column {
        name: "server_token_exact",
        write: |s| cell(s, |a| a.token_exact.to_string()),
        read: |s, v| acct(s).token_exact = count(v).unwrap_or(0),
    },
    Column {
        name: "server_token_end_token",
        write: |s| cell(s, |a| a.token_end_token.to_string()),
        read: |s, v| acct(s).token_end_token = count(v).unwrap_or(0),
    },
    Column {
        name: "server_token_utf8_merged",
        write: |s| cell(s, |a| a.token_utf8_merged.to_string()),
        read: |s, v| acct(s).token_utf8_merged = count(v).unwrap_or(0),
    },
    Column {
        name: "server_token_mismatch",
        write: |s| cell(s, |a| a.token_mismatch.to_string()),
        read: |s, v| acct(s).token_mismatch = count(v).unwrap_or(0),
    },
    Column {
        name: "tokens_per_chunk",
        write: |s| cell(s, |a| fixed(a.tokens_per_chunk, 4)),
        read: |s, v| acct(s).tokens_per_chunk = num(v),
    },
    Column {
        name: "breakdown_requests",
        write: |s| cell(s, |a| a.breakdown_requests.to_string()),
        read: |s, v| acct(s).breakdown_requests = count(v).unwrap_or(0),
    },
    Column {
        name: "queue_s_mean",
        write: |s| cell(s, |a| fixed(a.queue_s_mean, 6)),
        read: |s, v| acct(s).queue_s_mean = num(v),
    },
    Column {
        name: "load_s_mean",
        write: |s| cell(s, |a| fixed(a.load_s_mean, 6)),
        read: |s, v| acct(s).load_s_mean = num(v),
    },
    Column {
        name: "prefill_s_mean",
        write: |s| cell(s, |a| fixed(a.prefill_s_mean, 6)),
        read: |s, v| acct(s).prefill_s_mean = num(v),
    },
    Column {
        name: "decode_s_mean",
        write: |s| cell(s, |a| fixed(a.decode_s_mean, 6)),
        read: |s, v| acct(s).decode_s_mean = num(v),
    },
    Column {
        name: "client_s_mean",
        write: |s| cell(s, |a| fixed(a.client_s_mean, 6)),
        read: |s, v| acct(s).client_s_mean = num(v),
    },
    Column {
        name: "model_loads",
        write: |s| cell(s, |a| a.model_loads.to_string()),
        read: |s, v| acct(s).model_loads = count(v).unwrap_or(0),
    },
    Column {
        name: "model_load_max_s",
        write: |s| cell(s, |a| fixed(a.model_load_max_s, 6)),
        read: |s, v| acct(s).model_load_max_s = num(v),
    },
    Column {
        name: "server_cached_tokens",
        write: |s| {
            cell(s, |a| {
                a.cached_tokens.map(|n| n.to_string()).unwrap_or_default()
            })
        },
        read: |s, v| acct(s).cached_tokens = whole(v),
    },
];

/// The columns of the run's matrix, after the server's account: empty (0 instances) in runs
/// of one group from before them.
pub(super) const GROUP: &[Column] = &[
    Column {
        name: "group",
        write: |s| s.group.clone(),
        read: |s, v| s.group = v.into(),
    },
    Column {
        name: "group_label",
        write: |s| s.group_label.clone(),
        read: |s, v| s.group_label = v.into(),
    },
    Column {
        name: "setting",
        write: |s| s.setting.clone(),
        read: |s, v| s.setting = v.into(),
    },
    Column {
        name: "instances",
        write: |s| s.instances.to_string(),
        read: |s, v| s.instances = count(v).unwrap_or(0),
    },
    Column {
        name: "cycle_id",
        write: |s| s.cycle_id.to_string(),
        read: |s, v| s.cycle_id = count(v).unwrap_or(0),
    },
    // The busiest instance's tokens over the mean's; each instance's figures are in run.json.
    Column {
        name: "target_imbalance",
        write: |s| fixed(crate::stats::imbalance(&s.targets), 3),
        read: |_, _| {},
    },
];
