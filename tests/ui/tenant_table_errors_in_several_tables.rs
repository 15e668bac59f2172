use diesel_workspace::tenant_table;

// Every table of the invocation is checked; each error points into its own table.
tenant_table! {
    notes (id) {
        id -> Int4,
    }

    acme.tags (id) {
        id -> Int4,
    }

    labels (key) {
        id -> Int4,
    }
}

fn main() {}
