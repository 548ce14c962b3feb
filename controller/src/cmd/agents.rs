//! `tokengun agents`: each agent's identity, clock and what its monitors find.

use super::AgentAuthArgs;
use crate::link;
use crate::sinks::console;
use clap::Args;

/// `tokengun agents`.
#[derive(Args, Debug)]
pub struct AgentsArgs {
    /// Agent address, HOST:PORT (repeatable).
    #[arg(long = "agent", value_name = "HOST:PORT", required = true)]
    pub agents: Vec<String>,
    /// The inference server the agents would load: a local one's listening process is watched.
    #[arg(long, default_value = tokengun_common::defaults::TARGET)]
    pub target: String,
    /// Server process to watch, as pgrep matches it, or pid:N (repeatable).
    #[arg(long = "watch-process", value_name = "PATTERN")]
    pub watch_process: Vec<String>,
    #[command(flatten)]
    pub auth: AgentAuthArgs,
}

/// `tokengun agents`: each agent's identity and what its monitors find; exit 1 if any is down.
pub async fn exec(args: &AgentsArgs) -> u8 {
    let auth = link::AgentAuth {
        ca: args.auth.agent_ca.clone(),
        cert: args.auth.agent_cert.clone(),
        key: args.auth.agent_key.clone(),
        token_file: args.auth.agent_token_file.clone(),
    };
    if let Err(e) = auth.check() {
        eprintln!("error: {e}");
        return 2;
    }
    let spec = tokengun_proto::MonitorSpec {
        watch_process: args.watch_process.clone(),
        target_url: args.target.clone(),
        power: true,
        ..Default::default()
    };
    let mut code = 0;
    for addr in &args.agents {
        let probed = async {
            let l = link::AgentLink::connect_with(addr, std::time::Duration::from_secs(5), &auth)
                .await?;
            let info = l.hello(false).await?;
            let (state, cycle, last_seq) = l.status().await?;
            let clock = l.clock_offset(8).await?;
            let probe = l.probe(spec.clone()).await?;
            Ok::<_, link::LinkError>((info, (state, cycle, last_seq), clock, probe))
        };
        match probed.await {
            Ok((info, (state, cycle, last_seq), clock, probe)) => {
                let doing = match state.as_str() {
                    "running" => format!("running cycle {cycle}"),
                    "prepared" => format!("cycle {cycle} prepared"),
                    other => other.to_string(),
                };
                let mut text = format!(
                    "{addr}: up, {doing} · tokengun-agent {} · id {} · host {} · max {} concurrent · {last_seq} records so far\n  clock: read to ±{:.2} ms (lowest of 8 round trips {:.2} ms)\n  capabilities: {}\n",
                    info.version,
                    info.agent_id,
                    info.hostname,
                    info.max_concurrency,
                    clock.rtt.as_secs_f64() * 1e3 / 2.0,
                    clock.rtt.as_secs_f64() * 1e3,
                    info.capabilities.join(", ")
                );
                for s in &probe.sources {
                    text.push_str(&format!(
                        "  {:<13} {:<11} {}\n",
                        s.source,
                        if s.available { "found" } else { "unavailable" },
                        s.detail
                    ));
                }
                for w in &probe.watching {
                    text.push_str(&format!("  watching: {w}\n"));
                }
                console::write_stdout(&text);
            }
            Err(e) => {
                console::write_stdout(&format!("{addr}: down · {e}\n"));
                code = 1;
            }
        }
    }
    code
}
