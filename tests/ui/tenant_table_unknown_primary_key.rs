use diesel_workspace::tenant_table;

tenant_table! {
    memberships (user_id, tema_id) {
        user_id -> Int4,
        team_id -> Int4,
    }
}

fn main() {}
