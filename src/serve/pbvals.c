/* pbvals.c — placeholder */
