//! `test.world-0.1`: a stage as the first SDK built it, for the 0.1.0 stage
//! world (`wit/previous/0.1.0`), to prove osbuild still runs such stages.

wit_bindgen::generate!({
    path: "../../../wit/previous/0.1.0",
    world: "stage",
});

use osbuild::stage::tree;

#[cfg(target_family = "wasm")]
#[unsafe(link_section = "osbuild.stage")]
#[used]
static METADATA: [u8; include_bytes!("../stage.json").len()] = *include_bytes!("../stage.json");

struct Stage;

impl Guest for Stage {
    fn run(options: String) -> Result<(), StageError> {
        if let Some(at) = options.find("\"fail\":\"") {
            let rest = &options[at + 8..];
            let message = rest.split('"').next().unwrap_or_default().to_string();
            return Err(StageError {
                message,
                option_path: Some("fail".into()),
            });
        }
        let fail = |e: String| StageError {
            message: e,
            option_path: None,
        };
        std::fs::create_dir_all("/etc").map_err(|e| fail(format!("/etc: {e}")))?;
        std::fs::write("/etc/world", "0.1.0\n").map_err(|e| fail(format!("/etc/world: {e}")))?;
        tree::set_owner("/etc/world", 7, 8, true).map_err(|e| fail(e.message))?;
        tree::set_mode("/etc/world", 0o600).map_err(|e| fail(e.message))?;
        Ok(())
    }
}

export!(Stage);
