use diesel_workspace::tenant_table;

// Diesel is built here with its default `32-column-tables`: a 33rd column needs the next feature.
tenant_table! {
    wide (id) {
        id -> Int4,
        c1 -> Int4,
        c2 -> Int4,
        c3 -> Int4,
        c4 -> Int4,
        c5 -> Int4,
        c6 -> Int4,
        c7 -> Int4,
        c8 -> Int4,
        c9 -> Int4,
        c10 -> Int4,
        c11 -> Int4,
        c12 -> Int4,
        c13 -> Int4,
        c14 -> Int4,
        c15 -> Int4,
        c16 -> Int4,
        c17 -> Int4,
        c18 -> Int4,
        c19 -> Int4,
        c20 -> Int4,
        c21 -> Int4,
        c22 -> Int4,
        c23 -> Int4,
        c24 -> Int4,
        c25 -> Int4,
        c26 -> Int4,
        c27 -> Int4,
        c28 -> Int4,
        c29 -> Int4,
        c30 -> Int4,
        c31 -> Int4,
        c32 -> Int4,
    }
}

fn main() {}
