//! The crate README's example is `examples/web_service.rs`, which cargo compiles.

#[test]
fn the_readme_example_is_the_compiled_example() {
    let readme = include_str!("../README.md");
    let example = include_str!("../examples/web_service.rs");
    let code: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let section = readme
        .split("\n## Example\n")
        .nth(1)
        .expect("an `## Example` section");
    let block = section
        .split("```rust,ignore\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("a rust,ignore block in the section");
    assert_eq!(
        format!("{block}\n"),
        code,
        "the crate README's example differs from examples/web_service.rs"
    );
}
