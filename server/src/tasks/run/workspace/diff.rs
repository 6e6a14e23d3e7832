//! The turn's work as a diff: the changed files with their line counts, and the patch, for the
//! task's stored diff.

use std::collections::HashMap;

use super::{RESULT_REF, Workspace};

impl Workspace {
    /// The imported work since `base`: the changed files as JSON
    /// (`[{path, status, additions, deletions}]`) and the patch, unredacted; `None` when git
    /// cannot say.
    pub async fn diff_since(&self, base: &str) -> Option<(serde_json::Value, String)> {
        let range = format!("{base}..{RESULT_REF}");
        let (Ok(numstat), Ok(names), Ok(patch)) = (
            self.git.run(&["diff", "--numstat", "-z", &range]).await,
            self.git.run(&["diff", "--name-status", &range]).await,
            self.git.run(&["diff", "--no-color", &range]).await,
        ) else {
            return None;
        };
        let files = diff_files(&String::from_utf8_lossy(&numstat.stdout), &names.text());
        Some((files, String::from_utf8_lossy(&patch.stdout).into_owned()))
    }
}

/// `[{path, status, additions, deletions}]` from `git diff --numstat -z` and `--name-status`.
fn diff_files(numstat_z: &str, name_status: &str) -> serde_json::Value {
    let statuses: HashMap<String, String> = name_status
        .lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let status = parts.next()?;
            let path = parts.next_back()?;
            let status = match status.chars().next()? {
                'A' => "added",
                'D' => "deleted",
                'R' => "renamed",
                _ => "modified",
            };
            Some((path.to_owned(), status.to_owned()))
        })
        .collect();
    let mut files = Vec::new();
    let mut fields = numstat_z.split('\0').peekable();
    while let Some(entry) = fields.next() {
        let mut cols = entry.splitn(3, '\t');
        let (Some(add), Some(del), Some(path)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        // Renames: the path is empty and the old and new paths follow as two fields.
        let path = if path.is_empty() {
            let _old = fields.next();
            fields.next().unwrap_or_default().to_owned()
        } else {
            path.to_owned()
        };
        files.push(serde_json::json!({
            "path": path,
            "status": statuses.get(&path).cloned().unwrap_or_else(|| "modified".into()),
            "additions": add.parse::<i64>().ok(),
            "deletions": del.parse::<i64>().ok(),
        }));
    }
    serde_json::Value::Array(files)
}

#[cfg(test)]
mod tests {
    use super::diff_files;

    #[test]
    fn diff_files_pair_stats_with_statuses() {
        let files = diff_files(
            "3\t1\tsrc/a.rs\0-\t-\tlogo.png\0",
            "M\tsrc/a.rs\nA\tlogo.png\n",
        );
        assert_eq!(files[0]["path"], "src/a.rs");
        assert_eq!(
            (
                files[0]["additions"].as_i64(),
                files[0]["deletions"].as_i64()
            ),
            (Some(3), Some(1))
        );
        assert_eq!(files[1]["status"], "added");
        assert!(
            files[1]["additions"].is_null(),
            "binary files have no line counts"
        );
    }
}
