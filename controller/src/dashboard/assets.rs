//! The UI's files, embedded at compile time by build.rs (dashboard/dist/ui when it was
//! built, else the fallback page in src/dashboard/fallback).

include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

/// A file by its path (`/index.html`, `/assets/...`): its content type and bytes.
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    FILES
        .iter()
        .find(|(file, _, _)| *file == path)
        .map(|(_, content_type, body)| (*content_type, *body))
}
