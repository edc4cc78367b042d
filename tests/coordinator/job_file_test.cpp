// Job files: what an operator writes is read exactly, and a mistake is named.
#include "fedda/coordinator/job_file.h"

#include <gtest/gtest.h>

#include <fstream>

#include "fedda/models_core/model_spec.h"
#include "fedda/models_core/recipe.h"
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
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\ntransfer_precision: bf16\n", "transfer_precision must be float32 or float16 (got 'bf16')"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nkd_loss: kl\n", "kd_loss must be hinton or paper (got 'kl')"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nprecision: fp16\n", "precision must be auto, float32 or bfloat16 (got 'fp16')"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nserver_optimizer: sgd\n", "server_optimizer must be fedavg, fedadam or fedyogi"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nstudent_init: random\n", "student_init must be teacher or scratch"},
      {"id: a\ntype: kd\nteacher: t.pt\nsites: [x]\nbn_statistics: target\n", "bn_statistics must be shared or local"},
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
      {"id: a\ntype: evaluate\nteacher: t.pt\nsites: [x]\ndp: {clip_norm: 1, target_epsilon: 8}\n",
       "dp: applies to the jobs that train (teacher, kd, ada)"},
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
      {"id: a\ntype: teacher\nsites: [x]\nsource: x\nrecipe: {weight_average: 0.999}\n",
       "recipe: weight_average: averaging the weights over the steps is for centralized training"},
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

// Member by member, apart from the table, so that a setting the table leaves out is caught.
void expect_same_settings(const protocol::JobSpec& a, const protocol::JobSpec& b) {
  EXPECT_EQ(a.id, b.id) << "id";
  EXPECT_EQ(a.type, b.type) << "type";
  EXPECT_EQ(a.sites, b.sites) << "sites";
  EXPECT_EQ(a.source, b.source) << "source";
  EXPECT_EQ(a.fold, b.fold) << "fold";
  EXPECT_EQ(a.rounds, b.rounds) << "rounds";
  EXPECT_EQ(a.local_steps, b.local_steps) << "local_steps";
  EXPECT_EQ(a.steps_by_share, b.steps_by_share) << "steps_by_share";
  EXPECT_EQ(a.batch_size, b.batch_size) << "batch_size";
  EXPECT_EQ(a.learning_rate, b.learning_rate) << "learning_rate";
  EXPECT_EQ(a.decay_round, b.decay_round) << "decay_round";
  EXPECT_EQ(a.dice_weight, b.dice_weight) << "dice_weight";
  EXPECT_EQ(a.lesion_slice_fraction, b.lesion_slice_fraction) << "lesion_slice_fraction";
  EXPECT_EQ(a.augment, b.augment) << "augment";
  EXPECT_EQ(a.temperature, b.temperature) << "temperature";
  EXPECT_EQ(a.ada_weight, b.ada_weight) << "ada_weight";
  EXPECT_EQ(a.ada_warmup_rounds, b.ada_warmup_rounds) << "ada_warmup_rounds";
  EXPECT_EQ(a.seed, b.seed) << "seed";
  EXPECT_EQ(a.min_sites, b.min_sites) << "min_sites";
  EXPECT_EQ(a.round_deadline_s, b.round_deadline_s) << "round_deadline_s";
  EXPECT_EQ(a.evaluate, b.evaluate) << "evaluate";
  EXPECT_EQ(a.evaluation_sites, b.evaluation_sites) << "evaluation_sites";
  EXPECT_EQ(a.subjects, b.subjects) << "subjects";
  EXPECT_EQ(a.transfer_precision, b.transfer_precision) << "transfer_precision";
  EXPECT_EQ(a.sites_per_round, b.sites_per_round) << "sites_per_round";
  EXPECT_EQ(a.fraction, b.fraction) << "fraction";
  EXPECT_EQ(a.max_update_norm, b.max_update_norm) << "max_update_norm";
  EXPECT_EQ(a.student_init, b.student_init) << "student_init";
  EXPECT_EQ(a.kd_loss, b.kd_loss) << "kd_loss";
  EXPECT_EQ(a.kd_hard_weight, b.kd_hard_weight) << "kd_hard_weight";
  EXPECT_EQ(a.kd_confidence, b.kd_confidence) << "kd_confidence";
  EXPECT_EQ(a.bn_statistics, b.bn_statistics) << "bn_statistics";
  EXPECT_EQ(a.server_optimizer, b.server_optimizer) << "server_optimizer";
  EXPECT_EQ(a.server_lr, b.server_lr) << "server_lr";
  EXPECT_EQ(a.evaluate_every, b.evaluate_every) << "evaluate_every";
  EXPECT_EQ(a.precision, b.precision) << "precision";
  EXPECT_EQ(a.secure_aggregation, b.secure_aggregation) << "secure_aggregation";
  EXPECT_EQ(a.secagg_threshold, b.secagg_threshold) << "secagg_threshold";
  EXPECT_EQ(a.secagg_timeout_s, b.secagg_timeout_s) << "secagg_timeout_s";
  EXPECT_EQ(a.max_sample_share, b.max_sample_share) << "max_sample_share";
  EXPECT_EQ(a.test_time_mirroring, b.test_time_mirroring) << "test_time_mirroring";
  EXPECT_EQ(a.dp.clip_norm, b.dp.clip_norm) << "dp.clip_norm";
  EXPECT_EQ(a.dp.noise_multiplier, b.dp.noise_multiplier) << "dp.noise_multiplier";
  EXPECT_EQ(a.dp.target_epsilon, b.dp.target_epsilon) << "dp.target_epsilon";
  EXPECT_EQ(a.dp.delta, b.dp.delta) << "dp.delta";
  EXPECT_EQ(a.dp.slices_per_subject, b.dp.slices_per_subject) << "dp.slices_per_subject";
}

// The field table (protocol::for_each_job_setting) carries every setting through the wire, JSON
// and a job file written by job_file_settings: a spec with every setting off its default comes
// back the same from each.
TEST_F(JobFile, EverySettingSurvivesTheWireJsonAndAJobFileWrittenFromIt) {
  using namespace protocol;
  JobSpec j;
  j.id = "kd-every";
  j.type = JobType::kd;
  j.sites = {"utrecht", "amsterdam", "singapore"};
  j.source = "utrecht";
  j.fold = 1;
  j.rounds = 7;
  j.local_steps = 9;
  j.batch_size = 6;
  j.learning_rate = 3.5e-4;
  j.decay_round = 4;
  j.dice_weight = 0.75;
  j.lesion_slice_fraction = 0.3;
  j.augment = false;
  j.temperature = 3;
  j.ada_weight = 0.2;
  j.ada_warmup_rounds = 2;
  j.seed = 12345678901234ULL;
  j.min_sites = 2;
  j.round_deadline_s = 99.5;
  j.evaluate = false;
  j.evaluation_sites = {"amsterdam"};
  j.subjects = {"p-1", "p-2"};
  j.transfer_precision = TransferPrecision::float16;
  j.sites_per_round = 2;
  j.max_update_norm = 12.5;
  j.student_init = StudentInit::scratch;
  j.kd_loss = KdLoss::paper;
  j.kd_hard_weight = 1;
  j.kd_confidence = 0.8;
  j.bn_statistics = BnStatistics::local;
  j.server_optimizer = ServerOptimizer::fedyogi;
  j.server_lr = 0.03;
  j.evaluate_every = 3;
  j.precision = Precision::bfloat16;
  j.secagg_threshold = 2;
  j.secagg_timeout_s = 30;
  j.max_sample_share = 0.9;
  j.dp = {1.5, 0, 8, 1e-6, 2};
  j.test_time_mirroring = true;
  const auto round_trip = [](const JobSpec& spec) {
    const std::string expected = to_json(spec);
    JobOffer offer;
    offer.job = spec;
    auto wire = decode_body<JobOffer>(encode(Header{}, offer).body);
    ASSERT_TRUE(wire) << wire.error().message;
    expect_same_settings(wire->job, spec);
    EXPECT_EQ(to_json(wire->job), expected);
    auto json = job_spec_from_json(expected);
    ASSERT_TRUE(json) << json.error().message;
    expect_same_settings(*json, spec);
    EXPECT_EQ(to_json(*json), expected);
    const std::string text = job_file_settings(spec) + "teacher: t.pt\n";
    auto file = parse_job_file(text, "every.yaml");
    ASSERT_TRUE(file) << file.error().message << "\n" << text;
    expect_same_settings(file->spec, spec);
    EXPECT_EQ(to_json(file->spec), expected) << text;
    EXPECT_EQ(file->method, "kd");
  };
  EXPECT_NE(to_json(j).find("\"kd_loss\": \"paper\""), std::string::npos) << to_json(j);  // by name, not number
  round_trip(j);
  // The settings DP and an update bound exclude, on a second spec.
  j.dp = {};
  j.max_update_norm = 0;
  j.sites_per_round = 0;
  j.fraction = 0.5;
  j.steps_by_share = true;
  j.secure_aggregation = true;
  round_trip(j);
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
