//! Tables for the terminal, laid out by `comfy-table`: column widths follow the content (a long
//! unit name no longer pushes the columns after it out of line), no borders, numbers right
//! aligned, no trailing spaces, and never wrapped (the output stays one row per line for `grep`
//! and pipes).

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ContentArrangement};

/// The table type [`new`] gives (comfy-table's), for callers that fill one in a helper.
pub use comfy_table::Table;

/// A table with `header`, whose columns at the positions in `right` are right-aligned.
pub fn new(header: &[&str], right: &[usize]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    // No padding before a column and two spaces after: the first column starts at the margin.
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    for &i in right {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// The table as text: one line per row, each ending in a newline, no trailing spaces.
pub fn render(t: &Table) -> String {
    let mut s = t.trim_fmt();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_follow_the_longest_cell_and_numbers_align_right() {
        let mut t = super::new(&["code", "name", "services"], &[2]);
        t.add_row(vec![
            "KH-01",
            "Banteay Meanchey Provincial Administration",
            "7",
        ]);
        t.add_row(vec!["KH-0102", "Mongkol Borei", "1,234"]);
        let s = super::render(&t);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3, "{s}");
        // The third column starts at one place on every line, after the longest name.
        let ends: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "right-aligned: {s}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{s}");
    }
}
