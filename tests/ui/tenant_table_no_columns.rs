use diesel_workspace::tenant_table;

tenant_table! {
    notes (id) {}
}

fn main() {}
