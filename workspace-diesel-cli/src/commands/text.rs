//! Small helpers the commands share for talking to people: confirmation, escaping, plurals.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{bail, Context as _, Result};

/// Asks `question` on the terminal; the answer must be `expected`. Without a terminal, refuses
/// to `action`.
pub(crate) fn confirm(question: &str, expected: &str, action: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to {action} without confirmation: pass --yes (standard input is not a terminal)");
    }
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("could not read the answer")?;
    Ok(answer.trim() == expected)
}

/// `text` with its control characters escaped (a newline as `\n`), for error messages that
/// quote user input and must stay on one line.
pub(crate) fn shown(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Pluralises `word` for `n`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
