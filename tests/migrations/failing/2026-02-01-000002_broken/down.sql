DROP TABLE also_fine;
