#include "testutil.h"
START_TEST(placeholder) { ck_assert(1); } END_TEST
static Suite *suite(void){Suite *s=suite_create("x");TCase *c=tcase_create("c");tcase_add_test(c,placeholder);suite_add_tcase(s,c);return s;}
T_MAIN(suite)
