// Job files: what an operator writes is read exactly, and a mistake is named.
#include "fedda/coordinator/job_file.h"

#include <gtest/gtest.h>

#include <fstream>

#include "fedda/models/model_spec.h"
#include "fedda/models/recipe.h"
#include "support/test_support.h"

namespace fedda::coordinator {
namespace {

class JobFile : public ::testing::Test {
 protected:
  std::filesystem::path write(const std::string& text) {
    const auto path = dir_ / "job.yaml";
    std::ofstream(path) << text;
    return path;
  }
  testing::ScratchDir dir_;
};

TEST_F(JobFile, ReadsAKdJobAndResolvesTheTeacherBesideIt) {
  auto job = read_job_file(write("id: kd-1\ntype: kd\nteacher: models/teacher.pt\nsource: utrecht\n"
                                 "sites: [utrecht, amsterdam, singapore]\nrounds: 3\nlocal_steps: 5\nmin_sites: 2\n"));
  ASSERT_TRUE(job) << job.error().message;
  EXPECT_EQ(job->spec.id, "kd-1");
  EXPECT_EQ(job->spec.rounds, 3);
  EXPECT_EQ(job->spec.local_steps, 5);
  EXPECT_EQ(job->method, "kd");
  EXPECT_EQ(job->teacher, (dir_.path() / "models/teacher.pt").string());
  // Evaluation defaults to every site but the source.
  EXPECT_EQ(job->spec.evaluation_sites, (std::vector<std::string>{"amsterdam", "singapore"}));
}

TEST_F(JobFile, TeacherJobCarriesItsArchitecture) {
  auto job = read_job_file(write("id: t\ntype: teacher\nsource: utrecht\nsites: [utrecht]\n"
                                 "model: {width: 8, depth: 3, grid_size: 96, grid_spacing: 2}\n"));
  ASSERT_TRUE(job) << job.error().message;
  EXPECT_EQ(job->method, "lbound");
  auto spec = models::model_spec_from_json(job->spec.model_spec_json);
  ASSERT_TRUE(spec) << spec.error().message;
  EXPECT_EQ(spec->unet.width, 8);
  EXPECT_EQ(spec->grid.in_plane_size[0], 96u);
}

TEST_F(JobFile, ARecipeTravelsAsJsonAndTheClassicOneAsNothing) {
  auto job = read_job_file(write("id: t\ntype: teacher\nsource: utrecht\nsites: [utrecht]\n"
                                 "model: {depth: 4, grid_size: 128}\nrecipe: {preset: nnunet, patch_size: 64}\n"));
  ASSERT_TRUE(job) << job.error().message;
  auto recipe = models::recipe_from_json(job->spec.recipe);
  ASSERT_TRUE(recipe) << recipe.error().message;
  EXPECT_EQ(recipe->optimizer, "sgd");
  EXPECT_EQ(recipe->patch_size, 64);
  EXPECT_EQ(recipe->gamma_probability, 0.3);
  auto plain = read_job_file(write("id: t\ntype: teacher\nsource: utrecht\nsites: [utrecht]\n"));
  ASSERT_TRUE(plain) << plain.error().message;
  EXPECT_TRUE(plain->spec.recipe.empty());
  auto classic = read_job_file(write("id: t\ntype: teacher\nsource: utrecht\nsites: [utrecht]\nrecipe: {preset: classic}\n"));
  ASSERT_TRUE(classic) << classic.error().message;
  EXPECT_TRUE(classic->spec.recipe.empty());
}

TEST_F(JobFile, MistakesAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nrouns: 3\n", "unknown key 'rouns'"},
      // Where (FILE:LINE:COLUMN) and the known key a slip of the keyboard stands for.
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nlocal_step: 3\n",
       "unknown key 'local_step' at " + (dir_ / "job.yaml").string() + ":5:1; did you mean 'local_steps'?"},
      {"id: a\ntype: teacher\nsites: [x]\nsource: x\nmodel:\n  depth: 3\n  widht: 8\n",
       "model: unknown key 'widht' at " + (dir_ / "job.yaml").string() + ":7:3; did you mean 'width'?"},
      {"id: a\ntype: distill\nsites: [x]\n", "type 'distill'"},
      {"id: a\ntype: kd\nsites: [x]\n", "teacher"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, y]\nmin_sites: 3\n", "min_sites (3) exceeds"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nrounds: many\n", "key 'rounds': expected an integer"},
      {"id: ../up\ntype: kd\nteacher: t.pt\nsites: [x]\n", "id must be"},
      {"id: a\ntype: teacher\nsites: [x]\nsource: x\nmodel: {width: 8, depth: 9}\n", "model:"},
      {"[1, 2]\n", "mapping"},
      {"\n? ;-:", "a key that is not plain text"},  // found by the config fuzzer: used to throw out of finish()
      {"id: a\ntype: teacher\nsites: [x]\nsource: x\nmodel: {widht: 8}\n", "model: unknown key 'widht'"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x\n", "not valid YAML"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ntransfer_precision: bf16\n", "transfer_precision must be float32 or float16"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, y]\nmin_sites: 2\nsites_per_round: 1\n", "sites_per_round (1) is below min_sites (2)"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nfraction: 1.5\n", "fraction must be between"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nmax_sample_share: 1.5\n", "max_sample_share must be 0 (no bound)"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, \"y z\"]\n", "sites: 'y z' is not a valid site id"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nmethod: \"kd,forged\"\n", "method 'kd,forged' may not hold commas"},
      {"id: a\nsites: [x]\n", "type is required"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, y]\nsecure_aggregation: true\n", "secure_aggregation needs min_sites of at least 2"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, y]\nmin_sites: 2\nsecure_aggregation: true\nmax_update_norm: 5\n",
       "max_update_norm cannot be checked under secure_aggregation"},
      {"id: a\ntype: evaluate\nteacher: t.pt\nsites: [x, y]\nmin_sites: 2\nsecure_aggregation: true\n", "applies to training jobs"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, y, z, w]\nmin_sites: 2\nsites_per_round: 2\nsecure_aggregation: true\n",
       "sites_per_round (2) under secure_aggregation: a job of 4 sites opens sums of at least 3"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, y]\nsecagg_threshold: -1\n", "secagg_threshold must be"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, y]\nsecagg_timeout_s: 0\n", "secagg_timeout_s must be positive"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ndp: {target_epsilon: 8}\n", "dp: clip_norm is needed"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ndp: {clip_norm: 1}\n", "dp: give noise_multiplier or target_epsilon"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ndp: {clip_norm: 1, noise_multiplier: 1, target_epsilon: 8}\n",
       "dp: give noise_multiplier or target_epsilon"},
      {"id: a\ntype: ada\nteacher: t.pt\nsource: x\nsites: [x]\ndp: {clip_norm: 1, target_epsilon: 8}\n",
       "discriminator gradients are not made private"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ndp: {clip_norm: 1, target_epsilon: 8, delta: 2}\n", "dp: delta must be"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ndp: {clip_norm: 1, target_epsilon: 8, slices_per_subject: 9}\n",
       "slices_per_subject must be between 1 and batch_size (8)"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ndp: {clip_norm: 1, target_epsilon: 8, epsilon: 3}\n",
       "dp: unknown key 'epsilon'"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x, y]\nsecagg_timeout_s: 1e30\n", "at most 86400"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nrecipe: {preset: nnunet, gamma_probability: 2}\n",
       "recipe: gamma_probability is 2, outside [0, 1]"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nrecipe: {preset: nnunet, gama_probability: 0.5}\n",
       "recipe: unknown key 'gama_probability'"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nrecipe: {preset: bigaug}\n", "unknown recipe preset 'bigaug'"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nrecipe: nnunet\n", "key 'recipe': expected a mapping"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nrecipe: {optimizer: lbfgs}\n", "optimizer is 'lbfgs'"},
      {"id: a\ntype: teacher\nsites: [x]\nsource: x\nmodel: {depth: 4, grid_size: 64}\nrecipe: {patch_size: 96}\n",
       "recipe: patch_size 96 is larger than the model grid (64)"},
  };
  for (const auto& [text, expected] : cases) {
    auto job = read_job_file(write(text));
    ASSERT_FALSE(job) << text;
    EXPECT_NE(job.error().message.find(expected), std::string::npos) << job.error().message;
    EXPECT_NE(job.error().message.find("job.yaml"), std::string::npos) << job.error().message;
  }
  // A key like none of the known ones gets no guess.
  auto far = read_job_file(write("id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ncolour: red\n"));
  ASSERT_FALSE(far);
  EXPECT_NE(far.error().message.find("unknown key 'colour' at "), std::string::npos) << far.error().message;
  EXPECT_EQ(far.error().message.find("did you mean"), std::string::npos) << far.error().message;
  auto missing = read_job_file(dir_ / "absent.yaml");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("absent.yaml"), std::string::npos);
}

TEST_F(JobFile, TheShippedJobFilesAreValid) {
  const std::filesystem::path configs = std::filesystem::path(FEDDA_CONFIGS_DIR) / "jobs";
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(configs)) {
    auto job = read_job_file(entry.path());
    EXPECT_TRUE(job) << entry.path() << ": " << (job ? "" : job.error().message);
    ++n;
  }
  EXPECT_GE(n, 4);
}

}  // namespace
}  // namespace fedda::coordinator
