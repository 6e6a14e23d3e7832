//! Prints a launch plan as JSON, for checking plans against a real CLI by hand:
//! `cargo run -p drydock-agents --example dump_plan -- AGENT SCENARIO [RECORDER URL]`.

#[path = "../tests/common/mod.rs"]
mod common;

use drydock_agents::AgentRegistry;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [agent, scenario, rest @ ..] = args.as_slice() else {
        return Err("usage: dump_plan AGENT SCENARIO [RECORDER URL]".into());
    };
    let request = match rest {
        [recorder, url] => common::verify_request(agent, recorder, url),
        _ => common::request(agent, scenario),
    };
    let plan = AgentRegistry::builtin()?.plan(&request)?;
    let files: Vec<_> = plan
        .files
        .iter()
        .map(|f| {
            serde_json::json!({
                "path": f.path,
                "mode": f.mode,
                "contents": String::from_utf8_lossy(&f.contents),
            })
        })
        .collect();
    let out = serde_json::json!({
        "argv": plan.argv,
        "env": plan.env,
        "files": files,
        "mcp_names": plan.mcp_names,
        "servers": request.mcp_servers,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
