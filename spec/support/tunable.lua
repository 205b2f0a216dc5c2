-- A module with a setting, for the specs of how modules reach workers.
return { factor = 1 }
