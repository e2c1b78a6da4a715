//! The commands' text tables, laid out by `comfy-table`: no borders, two
//! spaces between columns, numbers right-aligned, and optional columns
//! nobody set left out.

use comfy_table::{presets, CellAlignment, ColumnConstraint};

/// Spaces between columns.
const GAP: u16 = 2;

/// Rows of text cells under a header. A column whose every cell is a
/// number (or `-`, no value) is right-aligned; an optional column is left out when every one
/// of its cells is empty or `0` (user data nobody set).
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    optional: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self { headers: headers.to_vec(), optional: vec![false; headers.len()], rows: Vec::new() }
    }

    /// Marks the columns with these headers optional.
    pub fn optional(mut self, headers: &[&str]) -> Self {
        for (header, optional) in self.headers.iter().zip(self.optional.iter_mut()) {
            *optional |= headers.contains(header);
        }
        self
    }

    /// Appends a row: one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.headers.len(), "a table row has one cell per column");
        self.rows.push(cells);
    }

    /// The table as lines of text (header first), each ending in a newline.
    pub fn render(&self) -> String {
        let mut grid = comfy_table::Table::new();
        grid.load_style(presets::NOTHING);
        grid.set_header(self.headers.clone());
        for row in &self.rows {
            grid.add_row(row.clone());
        }
        let last_shown = (0..self.headers.len()).rfind(|&column| self.shown(column));
        for (index, column) in grid.column_iter_mut().enumerate() {
            if !self.shown(index) {
                column.set_constraint(ColumnConstraint::Hidden);
            }
            column.set_padding((0, if Some(index) == last_shown { 0 } else { GAP }));
            if self.numeric(index) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        let mut text = grid.trim_fmt();
        text.push('\n');
        text
    }

    fn shown(&self, column: usize) -> bool {
        !self.optional[column] || self.rows.iter().any(|row| !row[column].is_empty() && row[column] != "0")
    }

    fn numeric(&self, column: usize) -> bool {
        let number = |cell: &str| !cell.is_empty() && cell.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let blank = |cell: &str| cell.is_empty() || cell == "-";
        !self.rows.is_empty()
            && self.rows.iter().all(|row| blank(&row[column]) || number(&row[column]))
            && self.rows.iter().any(|row| number(&row[column]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_numbers_right_aligned() {
        let mut table = Table::new(&["ID", "KIND", "AMOUNT"]);
        table.row(vec!["7".into(), "expenditure".into(), "1500000".into()]);
        table.row(vec!["12".into(), "receipt".into(), "3.50".into()]);
        let expected = "\
ID  KIND          AMOUNT
 7  expenditure  1500000
12  receipt         3.50
";
        assert_eq!(table.render(), expected);
    }

    #[test]
    fn optional_columns_nobody_set_are_left_out() {
        let mut table = Table::new(&["ID", "UD64", "UD32"]).optional(&["UD64", "UD32"]);
        table.row(vec!["1".into(), "0".into(), "5".into()]);
        table.row(vec!["2".into(), String::new(), "0".into()]);
        assert_eq!(table.render(), "ID  UD32\n 1     5\n 2     0\n");
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let table = Table::new(&["NODE", "ROLE"]);
        assert_eq!(table.render(), "NODE  ROLE\n");
    }
}
